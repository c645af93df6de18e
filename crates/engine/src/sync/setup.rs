//! Setting a sync up: per database a publication, a slot whose exported snapshot the copy
//! reads in, the copy itself, then the subscription; anything that fails or is cancelled on
//! the way removes what was created.

use std::{
    collections::{BTreeMap, HashSet},
    sync::Arc,
    time::Instant,
};

use super::*;
use crate::{
    db::Db,
    error::{Error, Result},
    ident,
    init::{self, InitReport},
    login::{self, Login},
    plan::types::{DatabasePlan, Plan, TargetAction},
    progress::{Event, ProgressSink, Tracker},
    replication::ReplicationConn,
    request::Request,
    sqlstate,
};

/// Copies every database of `plan` in the snapshot of its own new slot, then subscribes the
/// target to it. Returns once every database streams; on a failure, a `Cancel` or a
/// `Detach` it removes what it created on both sides first.
pub async fn start(req: &Request, plan: &Plan, sink: Arc<dyn ProgressSink>, control: Control) -> Result<SyncReport> {
    init::refuse_problems(plan)?;
    let id = match &req.local.sync_id {
        Some(id) => {
            check_id(id)?;
            id.clone()
        }
        None => match resumed_id(req, plan).await? {
            Some(id) => id,
            None => new_id(),
        },
    };
    let started = Instant::now();
    let (tools, roles) = init::prepare(req, &sink).await?;
    let mut report = SyncReport { init: InitReport { roles, ..InitReport::default() }, names: Vec::new() };
    let mut created: Vec<Objects> = Vec::new();
    let filter = req.filter.compile()?;
    let (login, why) = Login::make(&req.source, &id).await?;
    if let Some(why) = why {
        sink.emit(Event::Warning {
            message: format!(
                "{why}: the subscription logs in as {}, whose password the target stores (pg_subscription) until the cutover or stop",
                req.source.user()
            ),
        });
    }
    for (n, db) in plan.databases.iter().enumerate() {
        let name = format!("{}{n}", prefix(&id));
        let tracker = Tracker::new(sink.clone(), &db.target);
        let work = async {
            let source = Db::connect(&req.source, &db.source).await?;
            if req.options.replica_identity_full {
                set_replica_identity_full(&source, db).await?;
            }
            let tables: Vec<String> = published_tables(db).iter().map(|t| t.qualified()).collect();
            if tables.is_empty() {
                return Err(Error::Refused(format!(
                    "database \"{}\" has no table whose rows replicate: leave it out of a sync (--exclude-database) or copy it with init",
                    db.source
                )));
            }
            created.push(Objects {
                name: name.clone(),
                source_database: db.source.clone(),
                target_database: db.target.clone(),
            });
            if matches!(db.action, TargetAction::Resume) {
                return resume_database(req, &tools, db, (&id, &name), &login, &tracker, &sink).await;
            }
            source
                .batch(
                    &format!("create publication {name}"),
                    &format!("create publication {} for table {}", ident::quote(&name), tables.join(", ")),
                )
                .await?;
            let mut replication = ReplicationConn::connect(&req.source, &db.source).await?;
            let slot = replication.create_slot(&name).await?;
            tracing::info!(slot = %name, consistent_point = %slot.consistent_point, "replication slot created");
            let baseline = fingerprint_in_snapshot(req, db, &filter, Some(&slot.snapshot)).await?;
            let copied = init::copy_database(req, &tools, db, tracker.clone(), Some(&slot.snapshot)).await;
            // The snapshot is no longer needed; the subscriber needs the slot free.
            replication.close().await;
            let copied = copied?;
            subscribe(req, db, &name, &baseline, published_tables(db).len(), &login, &sink).await?;
            Ok::<_, Error>(copied)
        };
        let copied = run_controlled(work, control.clone()).await;
        match copied {
            Ok(copied) => {
                report.init.databases.push(copied);
                report.names.push(name);
            }
            // Interrupted (a worker's instance going away): the slot, the publication and the
            // copy's marks stay, and `--resume` (the job's next attempt) continues the copy.
            Err(Error::Stopped(_)) if *control.borrow() == Signal::Detach => {
                return Err(Error::Stopped(
                    "interrupted during the copy; its slot, publication and progress marks stay for --resume (a sync job's next attempt resumes it)".into(),
                ));
            }
            Err(e) => {
                let cleanup = remove_objects(req, &created).await;
                for failure in cleanup.1 {
                    sink.emit(Event::Warning { message: failure });
                }
                // Also when nothing else was created yet.
                if let Err(role) = login::drop_role(&req.source, &id).await {
                    sink.emit(Event::Warning { message: format!("the sync's login role: {role}") });
                }
                return Err(e);
            }
        }
    }
    report.init.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The id of the sync whose interrupted copy a `--resume` continues when none is given: the
/// one whose publication is on the first source database being resumed.
async fn resumed_id(req: &Request, plan: &Plan) -> Result<Option<String>> {
    match plan.databases.iter().find(|db| matches!(db.action, TargetAction::Resume)) {
        Some(db) => resume::interrupted_id(req, &db.source).await,
        None => Ok(None),
    }
}

/// Continues the sync of `db` whose copy died (`sync/resume.rs`): the copy resumed without
/// the tables whose rows did not all commit, the subscription created from the slot's start,
/// then those tables copied by the target's table synchronization.
async fn resume_database(
    req: &Request,
    tools: &crate::pgtools::PgTools,
    db: &DatabasePlan,
    (id, name): (&str, &str),
    login: &Login,
    tracker: &Arc<Tracker>,
    sink: &Arc<dyn ProgressSink>,
) -> Result<crate::init::DatabaseReport> {
    let source = Db::connect(&req.source, &db.source).await?;
    resume::check_slot(&source, name).await?;
    let interrupted = {
        let target = Db::connect(&req.target, &db.target).await?;
        resume::prepare(&source, &target).await?
    };
    sink.emit(Event::Warning {
        message: format!(
            "resuming the sync's copy of \"{}\": the tables copied in full stay; the target copies again {}",
            db.source,
            if interrupted.unfinished.is_empty() {
                "none".to_owned()
            } else {
                interrupted.unfinished.iter().map(|(s, t)| format!("{s}.{t}")).collect::<Vec<_>>().join(", ")
            }
        ),
    });
    let copied = init::copy_database(req, tools, db, tracker.clone(), None).await?;
    // The slot's snapshot is gone: the structure as it is now.
    let baseline = fingerprint_in_snapshot(req, db, &req.filter.compile()?, None).await?;
    resume::unpublish_unfinished(&source, name, &interrupted).await?;
    let carried = published_tables(db).len().saturating_sub(interrupted.unfinished.len());
    subscribe(req, db, name, &baseline, carried, login, sink).await?;
    if !interrupted.unfinished.is_empty() {
        let mut one = req.clone();
        one.local.sync_id = Some(id.to_owned());
        let found = find(&one).await?;
        let f = found
            .iter()
            .find(|f| f.objects.name == name)
            .ok_or_else(|| Error::Internal(format!("the subscription {name} was not found after creating it")))?;
        let patterns: Vec<String> = interrupted.unfinished.iter().map(resume::exact_pattern).collect();
        add_one(&one, f, &patterns, sink.clone(), true).await?;
    }
    Ok(copied)
}

/// Runs `work` until it ends or a `Cancel`/`Detach` arrives (then `work` is dropped, which
/// closes its connections, and the answer is [`Error::Stopped`]).
pub(super) async fn run_controlled<T>(work: impl Future<Output = Result<T>>, mut control: Control) -> Result<T> {
    tokio::pin!(work);
    loop {
        if let Some(stop) = stop_reason(*control.borrow_and_update()) {
            return Err(Error::Stopped(stop.into()));
        }
        tokio::select! {
            result = &mut work => return result,
            changed = control.changed() => {
                if changed.is_err() {
                    // Nobody can signal any more: just finish.
                    return work.await;
                }
            }
        }
    }
}

pub(super) fn stop_reason(signal: Signal) -> Option<&'static str> {
    match signal {
        Signal::Cancel => {
            Some("cancelled during the copy; barge removed the slot, publication and subscription it had created")
        }
        Signal::Detach => Some("interrupted during the copy"),
        Signal::Run | Signal::Cutover => None,
    }
}

pub(super) async fn set_replica_identity_full(source: &Db, db: &DatabasePlan) -> Result<()> {
    let rows = source.query("list tables without a primary key", include_str!("../sql/without_key.sql"), &[]).await?;
    let published: HashSet<(String, String)> =
        published_tables(db).iter().map(|t| (t.schema.clone(), t.name.clone())).collect();
    for row in rows {
        let (schema, table, identified): (String, String, bool) = (row.get(0), row.get(1), row.get(2));
        if identified || !published.contains(&(schema.clone(), table.clone())) {
            continue;
        }
        identify_fully(source, &schema, &table).await?;
    }
    Ok(())
}

/// `REPLICA IDENTITY FULL` on one source table without a key: its updates and deletes then
/// log the whole old row.
pub(super) async fn identify_fully(source: &Db, schema: &str, table: &str) -> Result<()> {
    source
        .batch(
            &format!("set REPLICA IDENTITY FULL on {schema}.{table}"),
            &format!("alter table {} replica identity full", ident::qualified(schema, table)),
        )
        .await
}

/// Creates the subscription and its record in one transaction on the target, logging in to
/// the source with `login`. A role made for the sync that the source's pg_hba.conf does not
/// admit falls back to the URL's user (said in a warning).
pub(super) async fn subscribe(
    req: &Request,
    db: &DatabasePlan,
    name: &str,
    baseline: &BTreeMap<String, Recorded>,
    tables: usize,
    login: &Login,
    sink: &Arc<dyn ProgressSink>,
) -> Result<()> {
    match create_subscription(req, db, name, baseline, tables, login).await {
        Err(e) if login.credentials().is_some() && refused_login(&e) => {
            sink.emit(Event::Warning {
                message: format!(
                    "the source refused the sync's own login role ({}); the subscription logs in as {} instead, whose password the target stores until the cutover",
                    e,
                    req.source.user()
                ),
            });
            create_subscription(req, db, name, baseline, tables, &Login::Url).await
        }
        result => result,
    }
}

/// Whether the source refused a login (pg_hba.conf, authentication), as the target reports it.
pub(super) fn refused_login(e: &Error) -> bool {
    let text = e.to_string();
    text.contains("pg_hba.conf") || text.contains("authentication failed")
}

pub(super) async fn create_subscription(
    req: &Request,
    db: &DatabasePlan,
    name: &str,
    baseline: &BTreeMap<String, Recorded>,
    tables: usize,
    login: &Login,
) -> Result<()> {
    let target = Db::connect(&req.target, &db.target).await?;
    // The statement carries a password: keep it out of the target's server log where the
    // session may decide that (superusers only).
    if !login::quiet(&target).await {
        tracing::debug!("statement logging stays as configured on the target");
    }
    let conninfo = subscription_conninfo(req, &db.source, login).await?;
    let fingerprint = serde_json::to_string(baseline).map_err(|e| Error::Internal(e.to_string()))?;
    let filter = serde_json::to_string(&req.filter).map_err(|e| Error::Internal(e.to_string()))?;
    let settings =
        serde_json::to_string(&Settings::from_options(&req.options)).map_err(|e| Error::Internal(e.to_string()))?;
    let table_count = tables as i64;
    target
        .in_transaction(&format!("create subscription {name}"), async || {
            target
                .batch(
                    "record the sync",
                    include_str!("../sql/sync_record.sql"),
                )
                .await?;
            target
                .execute(
                    "record the sync",
                    "insert into _barge.sync (name, source_database, tables, fingerprint, filter, settings) \
                     values ($1, $2, $3, $4::text::jsonb, $5::text::jsonb, $6::text::jsonb)",
                    &[&name, &db.source, &table_count, &fingerprint, &filter, &settings],
                )
                .await?;
            // Built here, not by the server's format(): the connection string travels in this
            // one statement only.
            let quoted = ident::quote(name);
            let sql = format!(
                "create subscription {quoted} connection {} publication {quoted} \
                 with (copy_data = false, create_slot = false, slot_name = {}, enabled = true)",
                ident::literal(&conninfo),
                ident::literal(name)
            );
            target.batch(&format!("create subscription {name}"), &sql).await.map_err(|e| match e.sqlstate() {
                Some(sqlstate::INSUFFICIENT_PRIVILEGE) => e.with_hint("the target user needs superuser or (PostgreSQL 16+) pg_create_subscription and CREATE on the database"),
                _ => e.with_hint(&format!("the target server connects to the source ({}) itself", req.source.endpoint())),
            })
        })
        .await
}
