//! [`SqliteStore`]: jobs in one SQLite file (WAL), the embedded default for `barge serve`.
//! Same semantics as DynamoDB: creates and replaces are conditional, the active-job limit
//! is exact (counted inside the write transaction), expired jobs are hidden.

use std::{
    path::Path,
    sync::{Arc, Mutex},
};

use barge_jobs::{
    Created, Job, JobId, JobStore, Page, State, StoreError, Timestamp,
    ports::{keyset_cursor, parse_keyset_cursor},
};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

const SCHEMA: &str = "
create table if not exists jobs (
    id text primary key,
    owner text not null,
    created_at integer not null,
    state text not null,
    active integer not null,
    revision integer not null,
    expires_at integer,
    body text not null
) strict;
create index if not exists jobs_by_owner on jobs (owner, created_at desc, id desc);
create index if not exists jobs_active on jobs (created_at, id) where active = 1;
";

/// Jobs in a SQLite database file.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

fn db_error(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn decode(id: &str, body: &str) -> Result<Job, StoreError> {
    serde_json::from_str(body).map_err(|e| StoreError::Corrupt { id: id.to_string(), message: e.to_string() })
}

fn encode(job: &Job) -> Result<String, StoreError> {
    serde_json::to_string(job).map_err(|e| StoreError::Corrupt { id: job.id.to_string(), message: e.to_string() })
}

impl SqliteStore {
    /// Opens (creating when missing) the store at `path`, in WAL mode.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Unavailable(format!("{}: {e}", dir.display())))?;
        }
        let conn = Connection::open(path).map_err(db_error)?;
        conn.pragma_update(None, "journal_mode", "wal").map_err(db_error)?;
        conn.pragma_update(None, "synchronous", "normal").map_err(db_error)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(db_error)?;
        conn.execute_batch(SCHEMA).map_err(db_error)?;
        Ok(SqliteStore { conn: Arc::new(Mutex::new(conn)) })
    }

    /// Runs `f` with the connection on the blocking pool.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut conn)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("store task: {e}")))?
    }

    /// Every stored row's columns and body, expired ones included (for secret-grepping tests).
    pub async fn dump(&self) -> Result<Vec<String>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn
                .prepare("select id, owner, created_at, state, active, revision, expires_at, body from jobs")
                .map_err(db_error)?;
            let rows = stmt
                .query_map([], |row| {
                    let columns: Vec<String> = (0..8)
                        .map(|i| {
                            row.get_ref(i).map(|value| match value {
                                rusqlite::types::ValueRef::Null => "NULL".to_string(),
                                rusqlite::types::ValueRef::Integer(n) => n.to_string(),
                                rusqlite::types::ValueRef::Real(x) => x.to_string(),
                                rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                                    String::from_utf8_lossy(t).into_owned()
                                }
                            })
                        })
                        .collect::<Result<_, _>>()?;
                    Ok(columns.join(" | "))
                })
                .map_err(db_error)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_error)
        })
        .await
    }
}

fn now_millis() -> i64 {
    Timestamp::now().millis()
}

impl JobStore for SqliteStore {
    async fn create(&self, job: &Job, max_active: u32) -> Result<Created, StoreError> {
        let job = job.clone();
        let body = encode(&job)?;
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_error)?;
            let existing: Option<(String, Option<i64>)> = tx
                .query_row("select body, expires_at from jobs where id = ?1", [job.id.as_str()], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })
                .optional()
                .map_err(db_error)?;
            if let Some((body, expires_at)) = existing {
                if expires_at.is_some_and(|at| at <= now_millis()) {
                    return Err(StoreError::KeyExpired);
                }
                return Ok(Created::Existing(decode(job.id.as_str(), &body)?));
            }
            let active: u32 =
                tx.query_row("select count(*) from jobs where active = 1", [], |row| row.get(0)).map_err(db_error)?;
            if active >= max_active {
                return Err(StoreError::LimitReached { limit: max_active });
            }
            tx.execute(
                "insert into jobs (id, owner, created_at, state, active, revision, expires_at, body)
                 values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    job.id.as_str(),
                    job.owner,
                    job.created_at.millis(),
                    job.state().as_str(),
                    job.is_active(),
                    job.revision as i64,
                    job.expires_at.map(Timestamp::millis),
                    body
                ],
            )
            .map_err(db_error)?;
            tx.commit().map_err(db_error)?;
            Ok(Created::New(job))
        })
        .await
    }

    async fn get(&self, id: &JobId) -> Result<Option<Job>, StoreError> {
        let id = id.clone();
        self.with(move |conn| {
            let body: Option<String> = conn
                .query_row(
                    "select body from jobs where id = ?1 and (expires_at is null or expires_at > ?2)",
                    params![id.as_str(), now_millis()],
                    |row| row.get(0),
                )
                .optional()
                .map_err(db_error)?;
            body.map(|body| decode(id.as_str(), &body)).transpose()
        })
        .await
    }

    async fn replace(&self, current: &Job, next: &Job) -> Result<(), StoreError> {
        let (id, revision, state) = (current.id.clone(), current.revision as i64, current.state());
        let next = next.clone();
        let body = encode(&next)?;
        self.with(move |conn| {
            let changed = conn
                .execute(
                    "update jobs set state = ?1, active = ?2, revision = ?3, expires_at = ?4, body = ?5
                     where id = ?6 and revision = ?7 and state = ?8",
                    params![
                        next.state().as_str(),
                        next.is_active(),
                        next.revision as i64,
                        next.expires_at.map(Timestamp::millis),
                        body,
                        id.as_str(),
                        revision,
                        state.as_str()
                    ],
                )
                .map_err(db_error)?;
            if changed == 1 { Ok(()) } else { Err(StoreError::Conflict) }
        })
        .await
    }

    async fn list(
        &self,
        owner: &str,
        state: Option<State>,
        limit: u32,
        after: Option<&str>,
    ) -> Result<Page, StoreError> {
        let after = after.map(parse_keyset_cursor).transpose()?;
        let owner = owner.to_string();
        self.with(move |conn| {
            let (after_millis, after_id) = after.unwrap_or((i64::MAX, String::new()));
            let mut stmt = conn
                .prepare_cached(
                    "select id, body from jobs
                     where owner = ?1
                       and (expires_at is null or expires_at > ?2)
                       and (?3 is null or state = ?3)
                       and (created_at < ?4 or (created_at = ?4 and ?5 <> '' and id < ?5))
                     order by created_at desc, id desc
                     limit ?6",
                )
                .map_err(db_error)?;
            let rows = stmt
                .query_map(
                    params![
                        owner,
                        now_millis(),
                        state.map(State::as_str),
                        after_millis,
                        after_id,
                        i64::from(limit) + 1
                    ],
                    |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)),
                )
                .map_err(db_error)?;
            let mut jobs = Vec::new();
            for row in rows {
                let (id, body) = row.map_err(db_error)?;
                jobs.push(decode(&id, &body)?);
            }
            Ok(Page::cut(jobs, limit, keyset_cursor))
        })
        .await
    }

    async fn active(&self) -> Result<Vec<Job>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn
                .prepare_cached("select id, body from jobs where active = 1 order by created_at, id")
                .map_err(db_error)?;
            let rows =
                stmt.query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))).map_err(db_error)?;
            rows.map(|row| {
                let (id, body) = row.map_err(db_error)?;
                decode(&id, &body)
            })
            .collect()
        })
        .await
    }

    async fn active_count(&self) -> Result<u32, StoreError> {
        self.with(|conn| {
            conn.query_row("select count(*) from jobs where active = 1", [], |row| row.get(0)).map_err(db_error)
        })
        .await
    }
}
