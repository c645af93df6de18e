//! The plan: which source database goes into which target database, which tables (split
//! into which parts), what the target holds now and what will happen to it. Planning reads
//! both servers and changes nothing; `barge init --dry-run` prints it, and every run prints
//! its database mapping.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::{
    catalog::{self, Contents, Relation},
    check::Check,
    db::Db,
    error::{Error, Result},
    filter::{CompiledFilter, Seen},
    ident,
    pgtools::PgTools,
    request::Request,
};

/// Large objects are copied in batches of this many, each committed with its progress mark.
const LO_BATCH: usize = 500;
/// No table is split into more parts than this.
const MAX_PARTS: u64 = 64;

pub(crate) mod sizing;
pub(crate) mod types;
pub use types::*;

/// Decides the database mapping.
pub(crate) async fn mapping(req: &Request, source_admin: &Db, filter: &CompiledFilter) -> Result<Mapping> {
    let all = req.options.all_databases;
    match (req.source.dbname(), req.target.dbname(), all) {
        (None, Some(target), false) => {
            return Err(Error::Invalid(format!(
                "the source URL names no database but the target URL names \"{target}\": to copy one database into \"{target}\", name it in the source URL (postgres://…/DATABASE); to copy every database, each into one of the same name, add --all-databases and remove the database from the target URL"
            )));
        }
        (None, None, false) => {
            return Err(Error::Invalid(
                "the source URL names no database: to copy one database, name it in the source URL (postgres://…/DATABASE); to copy every database, each into one of the same name, add --all-databases".into(),
            ));
        }
        // Both URLs naming the same maintenance database (postgres://…/postgres) is how
        // --all-databases is usually written; any other target database would be ignored.
        (source, Some(target), true) if source != Some(target) => {
            return Err(Error::Invalid(format!(
                "--all-databases copies each database into one of the same name, but the target URL names \"{target}\": remove the database from the target URL, or, to copy one database into \"{target}\", drop --all-databases and name the source database in the source URL"
            )));
        }
        _ => {}
    }
    if !all && filter.filters_databases() {
        return Err(Error::Invalid(
            "--include-database/--exclude-database select among the source's databases: add --all-databases".into(),
        ));
    }
    if !all {
        let source_db = req.source.dbname().unwrap_or("postgres").to_owned();
        let target_db = req.target.dbname().unwrap_or(&source_db).to_owned();
        if req.source.endpoint() == req.target.endpoint() && source_db == target_db {
            return Err(Error::Invalid(format!(
                "the source and target URLs name the same database (\"{source_db}\" on {}): give the target another database name",
                req.source.endpoint()
            )));
        }
        return Ok(Mapping { pairs: vec![(source_db, target_db)] });
    }
    let rows = source_admin.query("list databases", include_str!("../sql/databases.sql"), &[]).await?;
    let names: Vec<String> = rows.iter().map(|r| r.get::<_, String>("name")).collect();
    let unmatched = filter.unmatched_databases(&names);
    if !unmatched.is_empty() {
        return Err(Error::Invalid(format!("nothing was copied: {}", unmatched.join("; "))));
    }
    let pairs: Vec<(String, String)> =
        names.into_iter().filter(|name| filter.database(name)).map(|name| (name.clone(), name)).collect();
    if pairs.is_empty() {
        return Err(Error::Invalid("no source database matches the database filters".into()));
    }
    if req.source.endpoint() == req.target.endpoint() {
        return Err(Error::Invalid(format!(
            "--all-databases copies each database into the same name: the source and target cannot be the same server ({})",
            req.source.endpoint()
        )));
    }
    Ok(Mapping { pairs })
}

/// The relations a database copy covers, after schema and table filters, with partitions
/// following their parents and owned sequences following their tables.
pub(crate) struct RelationSet {
    pub selected: HashSet<u32>,
    pub excluded_schemas: Vec<String>,
    pub excluded_relations: Vec<(String, String)>,
}

pub(crate) fn select(db: &str, relations: &[Relation], schemas: &[String], filter: &CompiledFilter) -> RelationSet {
    let schema_ok: HashSet<&str> = schemas.iter().filter(|s| filter.schema(db, s)).map(String::as_str).collect();
    let excluded_schemas: Vec<String> = schemas.iter().filter(|s| !schema_ok.contains(s.as_str())).cloned().collect();
    let by_oid: HashMap<u32, &Relation> = relations.iter().map(|r| (r.oid, r)).collect();
    let mut selected: HashSet<u32> = relations
        .iter()
        .filter(|r| r.kind != 'S' || r.owned_by.is_none())
        .filter(|r| schema_ok.contains(r.schema.as_str()) && filter.table(db, &r.schema, &r.name))
        .map(|r| r.oid)
        .collect();
    // Partitions follow a selected parent unless excluded by name; parents follow a selected
    // partition (structure only: a partitioned table holds no rows itself).
    loop {
        let mut changed = false;
        for r in relations {
            if let Some(parent) = r.parent {
                let parent_selected = selected.contains(&parent);
                let excluded = !schema_ok.contains(r.schema.as_str()) || filter.excluded_table(db, &r.schema, &r.name);
                if parent_selected && !selected.contains(&r.oid) && !excluded {
                    selected.insert(r.oid);
                    changed = true;
                }
                if selected.contains(&r.oid) && !parent_selected && by_oid.contains_key(&parent) {
                    selected.insert(parent);
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    // Owned sequences follow their table.
    for r in relations {
        if let Some(owner) = r.owned_by
            && selected.contains(&owner)
        {
            selected.insert(r.oid);
        }
    }
    let excluded_relations = relations
        .iter()
        .filter(|r| schema_ok.contains(r.schema.as_str()) && !selected.contains(&r.oid))
        .map(|r| (r.schema.clone(), r.name.clone()))
        .collect();
    RelationSet { selected, excluded_schemas, excluded_relations }
}

/// Builds the plan, reading both servers; nothing is changed. What would stop a copy is
/// a failing finding, not an error, so `--dry-run` and `validate` can show all of it.
pub async fn plan(req: &Request) -> Result<Plan> {
    let filter = req.filter.compile()?;
    let (source_admin, _) = crate::db::connect_admin(&req.source).await?;
    let (target_admin, _) = crate::db::connect_admin(&req.target).await?;
    let source_major = (source_admin.version_num() / 10000) as u32;
    let mut findings = Vec::new();
    if source_admin.version_num() < 120000 {
        findings.push(Check::fail(
            "source version",
            format!("the source runs PostgreSQL {}", version_text(source_admin.version_num())),
            Some("barge copies from PostgreSQL 12 or newer".into()),
        ));
    }
    let pg_dump = match PgTools::locate(req.local.pg_bin.as_deref(), source_major).await {
        Ok(tools) => {
            findings.push(Check::pass(
                "pg_dump",
                format!("pg_dump {} ({}) reads PostgreSQL {source_major}", tools.version(), tools.pg_dump().display()),
            ));
            tools.version().to_owned()
        }
        Err(e) => {
            findings.push(Check::fail("pg_dump", e.to_string(), None));
            "none".to_owned()
        }
    };
    let map = mapping(req, &source_admin, &filter).await?;
    let mut plan = Plan {
        source: req.source.redacted(),
        target: req.target.redacted(),
        source_version: version_text(source_admin.version_num()),
        target_version: version_text(target_admin.version_num()),
        pg_dump,
        all_databases: req.options.all_databases,
        databases: Vec::new(),
        roles_to_create: Vec::new(),
        findings,
    };
    if target_admin.version_num() / 10000 < source_admin.version_num() / 10000 {
        plan.findings.push(Check::warn(
            "target version",
            format!(
                "the target runs an older major version ({}) than the source ({})",
                plan.target_version, plan.source_version
            ),
            Some(
                "objects that use newer features will fail to load; prefer a target at least as new as the source"
                    .into(),
            ),
        ));
    }
    let target_roles = catalog::role_names(&target_admin).await?;
    let target_extensions = catalog::available_extensions(&target_admin).await?;
    let mut missing_owners: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut seen = Seen::default();
    // barge's sessions besides the COPY streams: index builders, the snapshot's holder, the
    // schema dumps and an administrative session.
    let others = req.options.index_jobs_or_cpus() + 4;
    let room = sizing::connection_room(&source_admin, others)
        .await?
        .min(sizing::connection_room(&target_admin, others).await?);
    for (source_db, target_db) in &map.pairs {
        let source = Db::connect(&req.source, source_db).await?;
        let planned = plan_database(req, &filter, &source, &target_admin, (source_db, target_db), room).await?;
        plan.findings.extend(planned.findings);
        seen.schemas.extend(planned.seen.schemas);
        seen.relations.extend(planned.seen.relations);
        let db_plan = planned.plan;
        let name = format!("target database \"{target_db}\"");
        plan.findings.push(match &db_plan.action {
            TargetAction::Refuse { reason } => Check::fail(name, reason.clone(), None),
            TargetAction::DropAndCreate { contents } => Check::warn(
                name,
                format!("will be dropped and re-created (--drop-existing); it holds {contents}"),
                None,
            ),
            TargetAction::Create => Check::pass(name, format!("will be created, copied from \"{source_db}\"")),
            TargetAction::UseEmpty => Check::pass(name, format!("exists and is empty; copied from \"{source_db}\"")),
            TargetAction::Resume => Check::pass(name, "an interrupted copy will be resumed (--resume)"),
        });
        for (ext, _) in catalog::extensions(&source).await? {
            if !target_extensions.contains(&ext) {
                plan.findings.push(Check::fail(
                    format!("extension {ext}"),
                    format!(
                        "database \"{source_db}\" uses extension \"{ext}\", which the target server cannot install"
                    ),
                    Some(format!("install {ext} on the target server (or its managed-service equivalent)")),
                ));
            }
        }
        if !req.options.no_owner {
            for role in catalog::owners(&source).await? {
                if !target_roles.contains(&role) {
                    missing_owners.entry(role).or_default().push(source_db.clone());
                }
            }
        }
        plan.databases.push(db_plan);
    }
    let unmatched = filter.unmatched(&seen);
    if !unmatched.is_empty() {
        return Err(Error::Invalid(format!(
            "nothing was copied: {} (patterns are globs matched case-sensitively against the source's names)",
            unmatched.join("; ")
        )));
    }
    if plan.databases.iter().any(|d| matches!(d.action, TargetAction::Create | TargetAction::DropAndCreate { .. })) {
        let can_create: bool = target_admin
            .query_one(
                "read the target user's attributes",
                "select rolcreatedb or rolsuper from pg_catalog.pg_roles where rolname = current_user",
                &[],
            )
            .await?
            .get(0);
        plan.findings.push(if can_create {
            Check::pass("target CREATEDB", "the target user may create databases")
        } else {
            Check::fail(
                "target CREATEDB",
                format!("the target user {} may not create databases", req.target.user()),
                Some("grant CREATEDB to the target user, or create the target database (empty) yourself".into()),
            )
        });
    }
    if req.options.roles {
        plan.roles_to_create = crate::roles::missing(&source_admin, &target_roles).await?;
    } else if !missing_owners.is_empty() {
        let list: Vec<String> = missing_owners
            .iter()
            .map(|(role, dbs)| format!("\"{role}\" (owns objects in {})", dbs.join(", ")))
            .collect();
        plan.findings.push(Check::fail(
            "roles",
            format!("the target server lacks role(s) {}", list.join(", ")),
            Some("pass --roles to create them (without passwords), create them yourself, or pass --no-owner to give everything to the target user".into()),
        ));
    }
    if req.options.sync {
        let checks = crate::sync::preflight(req, &plan.databases, &source_admin, &target_admin).await;
        plan.findings.extend(checks);
    }
    Ok(plan)
}

/// Tables never vacuumed or analyzed up to this size have their rows counted for the plan.
const COUNT_ROWS_UP_TO: u64 = 8 << 20;
/// At most this much of them is read.
const COUNT_ROWS_IN_ALL: u64 = 256 << 20;

/// Whether pg_dump locks a relation of this kind for the whole dump (tables, partitioned
/// tables, materialized views, foreign tables).
fn pg_dump_locks(kind: char) -> bool {
    matches!(kind, 'r' | 'p' | 'm' | 'f')
}

/// Whether the source's lock table holds pg_dump's locks: pg_dump locks every table it reads
/// in one transaction, and the server's lock table holds `max_locks_per_transaction ×
/// (max_connections + max_prepared_transactions)` locked objects for all sessions together.
/// Changing that needs a restart, so a source too small for the selection is a problem the
/// plan names with the setting it needs; one that leaves little room for other sessions, a
/// warning. (barge's own copy sessions release their locks as they go; the target gets its
/// schema in transactions that fit its own lock table.)
async fn source_lock_table(db: &str, source: &Db, locked: usize) -> Result<Option<Check>> {
    let row = source
        .query_one(
            "read the size of the lock table",
            "select pg_catalog.current_setting('max_locks_per_transaction')::int8, \
                    pg_catalog.current_setting('max_connections')::int8 \
                    + pg_catalog.current_setting('max_prepared_transactions')::int8",
            &[],
        )
        .await?;
    let (per_transaction, sessions): (i64, i64) = (row.get(0), row.get(1));
    let slots = (per_transaction * sessions).max(0) as usize;
    let name = format!("source lock table ({db})");
    // Room for the sessions that run meanwhile: a tenth of the table, at least 200 locks.
    let headroom = (slots / 10).max(200);
    if locked + headroom > slots {
        let needed = (locked + headroom).div_ceil(sessions.max(1) as usize);
        return Ok(Some(Check::fail(
            name,
            format!(
                "pg_dump locks the {locked} tables it reads in one transaction, and the source's lock table holds {slots} locks for all sessions (max_locks_per_transaction {per_transaction} × {sessions} connections)"
            ),
            Some(format!(
                "set max_locks_per_transaction to at least {needed} on the source (it takes a restart), or copy fewer tables at a time (--include-schema, --exclude-schema)"
            )),
        )));
    }
    if locked > slots / 2 {
        return Ok(Some(Check::warn(
            name,
            format!(
                "pg_dump will hold {locked} of the source's {slots} lock slots while it reads the schema; sessions that lock many tables meanwhile may fail with \"out of shared memory\""
            ),
            None,
        )));
    }
    Ok(None)
}

/// Views or materialized views selected while a relation they read is left out.
async fn view_problems(db: &str, source: &Db, relations: &[Relation], selection: &RelationSet) -> Result<Vec<Check>> {
    let by_oid: HashMap<u32, &Relation> = relations.iter().map(|r| (r.oid, r)).collect();
    let mut problems = Vec::new();
    for (view, dep) in catalog::view_deps(source).await? {
        if !selection.selected.contains(&view) {
            continue;
        }
        if let (Some(v), Some(d)) = (by_oid.get(&view), by_oid.get(&dep))
            && !selection.selected.contains(&dep)
        {
            problems.push(Check::fail(
                format!("view {}.{}", v.schema, v.name),
                format!("in database \"{db}\" it reads {}.{}, which the filters leave out", d.schema, d.name),
                Some(format!("include {}.{} or exclude the view too", d.schema, d.name)),
            ));
        }
    }
    Ok(problems)
}

/// Relations the source user cannot read in full: no SELECT privilege, or row security that
/// would hide rows (barge reads with row_security off, so such a read fails rather than
/// silently copying a subset).
async fn privilege_problems(
    db: &str,
    source: &Db,
    relations: &[Relation],
    selection: &RelationSet,
) -> Result<Vec<Check>> {
    let oids: Vec<i64> = relations
        .iter()
        .filter(|r| matches!(r.kind, 'r' | 'p' | 'm' | 'S') && selection.selected.contains(&r.oid))
        .map(|r| i64::from(r.oid))
        .collect();
    let rows = source
        .query(
            "check read privileges",
            "select n.nspname || '.' || c.relname, \
                    not pg_catalog.has_table_privilege(c.oid, 'SELECT') \
                      and not (c.relkind = 'S' and pg_catalog.has_sequence_privilege(c.oid, 'USAGE')), \
                    c.relrowsecurity and (c.relforcerowsecurity or not pg_catalog.pg_has_role(c.relowner, 'USAGE')) \
                      and not (select rolbypassrls or rolsuper from pg_catalog.pg_roles where rolname = current_user) \
             from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace \
             where c.oid = any($1::int8[]::oid[]) order by 1",
            &[&oids],
        )
        .await?;
    let denied: Vec<String> = rows.iter().filter(|r| r.get::<_, bool>(1)).map(|r| r.get(0)).collect();
    let hidden: Vec<String> = rows.iter().filter(|r| r.get::<_, bool>(2)).map(|r| r.get(0)).collect();
    let list = |names: &[String]| {
        let more = if names.len() > 5 { format!(" and {} more", names.len() - 5) } else { String::new() };
        format!("{}{more}", names.iter().take(5).cloned().collect::<Vec<_>>().join(", "))
    };
    let mut checks = Vec::new();
    let name = format!("source privileges in \"{db}\"");
    if !denied.is_empty() {
        checks.push(Check::fail(
            name.clone(),
            format!("the source user cannot read {}", list(&denied)),
            Some("GRANT SELECT on them (or on ALL TABLES IN SCHEMA …) to the source user, or leave them out with --exclude-table".into()),
        ));
    }
    if !hidden.is_empty() {
        checks.push(Check::fail(
            name.clone(),
            format!("row-level security would hide rows of {} from the source user", list(&hidden)),
            Some("copy as the tables' owner or a role with BYPASSRLS".into()),
        ));
    }
    if denied.is_empty() && hidden.is_empty() {
        checks.push(Check::pass(name, format!("the source user can read all {} selected relation(s)", oids.len())));
    }
    Ok(checks)
}

/// A database's plan and what planning found.
struct PlannedDatabase {
    plan: DatabasePlan,
    findings: Vec<Check>,
    /// The schemas and relations the filters were matched against.
    seen: Seen,
}

async fn plan_database(
    req: &Request,
    filter: &CompiledFilter,
    source: &Db,
    target_admin: &Db,
    (source_db, target_db): (&str, &str),
    connection_room: usize,
) -> Result<PlannedDatabase> {
    let relations = catalog::relations(source).await?;
    let schemas = catalog::schemas(source).await?;
    let selection = select(source_db, &relations, &schemas, filter);
    let mut findings = view_problems(source_db, source, &relations, &selection).await?;
    findings.extend(privilege_problems(source_db, source, &relations, &selection).await?);
    let locked = relations.iter().filter(|r| selection.selected.contains(&r.oid) && pg_dump_locks(r.kind)).count();
    findings.extend(source_lock_table(source_db, source, locked).await?);
    let text_copy = catalog::text_copy_tables(source).await?;
    // Tables no VACUUM or ANALYZE has seen have no row estimate: count the small ones (a
    // few pages each), estimate the others from their size and column types.
    let uncounted: Vec<(u32, String)> = relations
        .iter()
        .filter(|r| {
            r.kind == 'r' && !r.counted && r.heap_bytes <= COUNT_ROWS_UP_TO && selection.selected.contains(&r.oid)
        })
        .scan(0u64, |total, r| {
            *total += r.heap_bytes;
            (*total <= COUNT_ROWS_IN_ALL).then(|| (r.oid, ident::qualified(&r.schema, &r.name)))
        })
        .collect();
    let row_counts = catalog::count_rows(source, &uncounted).await;
    let block_size: i64 =
        source.query_one("read block_size", "select current_setting('block_size')::int8", &[]).await?.get(0);
    let copied = || {
        relations.iter().filter(|r| {
            r.kind == 'r' && selection.selected.contains(&r.oid) && !filter.schema_only(source_db, &r.schema, &r.name)
        })
    };
    let (streams, streams_reason, streams_wanted) = match req.options.jobs {
        Some(jobs) => (jobs.max(1) as usize, format!("{jobs} COPY stream(s): set by --jobs"), jobs.max(1) as usize),
        None => sizing::streams(&sizing::Inputs {
            bytes: copied().map(|r| r.bytes).sum(),
            parts: copied().map(|r| part_count(r.bytes, req.options.split_bytes(), 1) as usize).sum(),
            cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            servers_here: sizing::is_here(req.source.host()) && sizing::is_here(req.target.host()),
            connection_room: Some(connection_room),
        }),
    };
    let mut tables = Vec::new();
    let mut objects = ObjectCounts {
        schemas: schemas.iter().filter(|s| filter.schema(source_db, s) && *s != "public").count(),
        ..ObjectCounts::default()
    };
    for r in relations.iter().filter(|r| selection.selected.contains(&r.oid)) {
        match r.kind {
            'r' => objects.tables += 1,
            'p' => objects.partitioned_tables += 1,
            'v' => objects.views += 1,
            'm' => objects.materialized_views += 1,
            'S' => objects.sequences += 1,
            'f' => objects.foreign_tables += 1,
            _ => {}
        }
        if r.kind != 'r' {
            continue;
        }
        let schema_only = filter.schema_only(source_db, &r.schema, &r.name);
        let parts = if schema_only {
            Vec::new()
        } else {
            split(source, r, req.options.split_bytes(), streams, block_size as u64).await?
        };
        tables.push(TablePlan {
            schema: r.schema.clone(),
            name: r.name.clone(),
            bytes: r.bytes,
            est_rows: if r.counted {
                r.est_rows
            } else {
                row_counts.get(&r.oid).copied().unwrap_or(r.heap_bytes / r.row_width)
            },
            kind: if r.parent.is_some() {
                TableKind::Partition
            } else if r.persistence == 'u' {
                TableKind::Unlogged
            } else {
                TableKind::Table
            },
            schema_only,
            text_copy: text_copy.contains(&r.oid),
            columns: r.columns.clone(),
            parts,
            own_autovacuum: r.own_autovacuum,
            extended_statistics: r.extended_statistics,
        });
    }
    tables.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.display().cmp(&b.display())));
    objects.indexes = catalog::index_tables(source).await?.iter().filter(|t| selection.selected.contains(t)).count();
    let mut skipped_foreign_keys = Vec::new();
    for fk in catalog::foreign_keys(source).await? {
        if !selection.selected.contains(&fk.table_oid) {
            continue;
        }
        if selection.selected.contains(&fk.ref_oid) {
            objects.foreign_keys += 1;
        } else {
            let text = format!("{}.{}.{}", fk.schema, fk.table_name, fk.name);
            findings.push(Check::warn(
                format!("foreign key {text}"),
                format!("in database \"{source_db}\" it references a table the filters leave out; it is not created"),
                None,
            ));
            skipped_foreign_keys.push(text);
        }
    }
    let copy_lobs = !req.options.skip_large_objects && filter_keeps_large_objects(&req.filter);
    let lo_oids = if copy_lobs { catalog::large_object_oids(source).await? } else { Vec::new() };
    let large_object_batches = lo_oids.chunks(LO_BATCH).map(|c| (c[0], c[c.len() - 1])).collect::<Vec<_>>();
    let action = target_action(req, target_admin, target_db).await?;
    let bytes = tables.iter().filter(|t| !t.schema_only).map(|t| t.bytes).sum();
    let (worker_cpus, worker_cpus_reason) = sizing::worker_cpus(streams_wanted, bytes);
    let plan = DatabasePlan {
        source: source_db.to_owned(),
        target: target_db.to_owned(),
        action,
        tables,
        excluded_schemas: selection.excluded_schemas,
        excluded_relations: selection.excluded_relations,
        skipped_foreign_keys,
        large_objects: lo_oids.len() as u64,
        large_object_batches,
        objects,
        bytes,
        streams,
        streams_reason,
        worker_cpus,
        worker_cpus_reason,
    };
    let seen = Seen {
        schemas: schemas.iter().map(|s| (source_db.to_owned(), s.clone())).collect(),
        relations: relations.iter().map(|r| (source_db.to_owned(), r.schema.clone(), r.name.clone())).collect(),
    };
    Ok(PlannedDatabase { plan, findings, seen })
}

/// Large objects belong to no schema; like pg_dump, barge copies them unless schema or
/// table inclusion filters narrow the copy.
fn filter_keeps_large_objects(filter: &crate::filter::Filter) -> bool {
    filter.include_schemas.is_empty() && filter.include_tables.is_empty()
}

/// How many parts a table of `bytes` is split into: one per `threshold`, rounded up to a
/// multiple of the COPY streams so the table's last round keeps every stream busy.
pub(crate) fn part_count(bytes: u64, threshold: u64, jobs: usize) -> u64 {
    if threshold == 0 || bytes <= threshold {
        return 1;
    }
    let jobs = jobs.max(1) as u64;
    bytes.div_ceil(threshold).max(2).div_ceil(jobs).saturating_mul(jobs).min(MAX_PARTS)
}

async fn split(source: &Db, r: &Relation, threshold: u64, jobs: usize, block_size: u64) -> Result<Vec<Part>> {
    let n = part_count(r.bytes, threshold, jobs);
    if n == 1 {
        return Ok(vec![Part::Whole]);
    }
    if let Some(column) = &r.int_key {
        let sql = format!(
            "select min({c})::int8, max({c})::int8 from only {t}",
            c = ident::quote(column),
            t = ident::qualified(&r.schema, &r.name)
        );
        let row = source.query_one(&format!("find the key range of {}.{}", r.schema, r.name), &sql, &[]).await?;
        return Ok(match (row.get::<_, Option<i64>>(0), row.get::<_, Option<i64>>(1)) {
            (Some(min), Some(max)) => key_parts(column, min, max, n),
            _ => vec![Part::Whole],
        });
    }
    // TID range scans (PostgreSQL 14+) read only the blocks of a part.
    if source.version_num() >= 140000 {
        let pages = (r.heap_bytes / block_size.max(1)).max(1);
        return Ok(block_parts(pages, n));
    }
    Ok(vec![Part::Whole])
}

async fn target_action(req: &Request, target_admin: &Db, target_db: &str) -> Result<TargetAction> {
    let exists = target_admin
        .query_opt(
            "look for the target database",
            "select 1 from pg_catalog.pg_database where datname = $1",
            &[&target_db],
        )
        .await?
        .is_some();
    if !exists {
        return Ok(TargetAction::Create);
    }
    let target = Db::connect(&req.target, target_db).await?;
    let contents = catalog::contents(&target).await?;
    let endpoint = req.target.endpoint();
    // With both, an interrupted copy is resumed and anything else is dropped: what a job's
    // next attempt does after a first one that died before or after its first commit.
    if contents.interrupted && req.options.resume {
        return Ok(TargetAction::Resume);
    }
    if req.options.drop_existing {
        return Ok(if contents.is_empty() && !contents.interrupted {
            TargetAction::UseEmpty
        } else {
            TargetAction::DropAndCreate { contents: contents.describe() }
        });
    }
    if contents.interrupted {
        return Ok(TargetAction::Refuse {
            reason: format!(
                "target database \"{target_db}\" on {endpoint} holds an interrupted barge copy: pass --resume to continue it, or --drop-existing to start over"
            ),
        });
    }
    if contents.is_empty() {
        return Ok(TargetAction::UseEmpty);
    }
    Ok(TargetAction::Refuse { reason: not_empty_reason(target_db, &endpoint, &contents, req.options.resume) })
}

fn not_empty_reason(db: &str, endpoint: &str, contents: &Contents, resume: bool) -> String {
    let resume_note = if resume { " (--resume found no progress marks of an earlier barge copy there)" } else { "" };
    format!(
        "target database \"{db}\" on {endpoint} is not empty{resume_note}: it holds {}. barge never overwrites a database: pass --drop-existing to drop and re-create it, or choose another target database",
        contents.describe()
    )
}

/// `180006` → `18.6`, `150018` → `15.18`.
pub(crate) fn version_text(num: i32) -> String {
    format!("{}.{}", num / 10000, num % 10000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_parts_cover_everything() {
        let parts = key_parts("id", 1, 1000, 4);
        assert_eq!(parts.len(), 4);
        assert_eq!(parts[0], Part::Key { column: "id".into(), from: None, to: Some(251) });
        assert_eq!(parts[1], Part::Key { column: "id".into(), from: Some(251), to: Some(501) });
        assert_eq!(parts[3], Part::Key { column: "id".into(), from: Some(751), to: None });
        assert_eq!(parts[0].predicate().unwrap(), "\"id\" < 251");
        // A range smaller than the part count gives fewer parts.
        assert_eq!(key_parts("id", 5, 6, 8).len(), 2);
        // Extreme bounds do not overflow.
        let wide = key_parts("id", i64::MIN, i64::MAX, 3);
        assert_eq!(wide.len(), 3);
    }

    #[test]
    fn part_counts_fill_every_stream() {
        assert_eq!(part_count(100, 256, 4), 1);
        assert_eq!(part_count(1100, 256, 4), 8);
        assert_eq!(part_count(1100, 256, 2), 6);
        assert_eq!(part_count(300, 256, 1), 2);
        assert_eq!(part_count(u64::MAX, 1, 3), MAX_PARTS);
    }

    #[test]
    fn block_parts_are_open_ended() {
        let parts = block_parts(100, 4);
        assert_eq!(parts[0], Part::Blocks { from: None, to: Some(25) });
        assert_eq!(parts[3], Part::Blocks { from: Some(75), to: None });
        assert_eq!(
            parts[1].predicate().unwrap(),
            "ctid >= '(25,0)'::pg_catalog.tid and ctid < '(50,0)'::pg_catalog.tid"
        );
        assert_eq!(block_parts(1, 4).len(), 1);
    }

    #[test]
    fn versions_print_like_postgres() {
        assert_eq!(version_text(180006), "18.6");
        assert_eq!(version_text(150018), "15.18");
    }
}
