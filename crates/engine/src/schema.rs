//! Schema: pg_dump writes the pre-data and post-data sections of the copy's snapshot as two
//! custom-format archives; barge picks entries from their tables of contents ([`crate::toc`])
//! and pg_restore renders them as scripts that the target's server runs as they are. The
//! target database itself comes from the catalog ([`crate::database`]).

use std::{collections::HashSet, path::PathBuf};

use crate::{
    conninfo::ConnInfo,
    db::Db,
    error::{Error, Result},
    pgtools::{self, DumpOptions, LeaveOut, PgTools, Section},
    sqlstate,
    toc::{self, TocEntry},
};

/// Both schema sections of one database, read in one snapshot, in a private directory.
pub(crate) struct SchemaDump {
    dir: tempfile::TempDir,
    /// The pre-data archive's entries, in pg_dump's order.
    pub pre: Vec<TocEntry>,
    /// The post-data archive's entries.
    pub post: Vec<TocEntry>,
    tools: PgTools,
    leave_out: LeaveOut,
    /// pg_restore's `\restrict` key: random, so no text in an archive can name it.
    key: String,
}

/// Runs pg_dump for pre-data and post-data concurrently in `snapshot`, and lists post-data's
/// entries.
pub(crate) async fn dump(
    tools: &PgTools,
    source: &ConnInfo,
    dbname: &str,
    tls_in_use: bool,
    snapshot: Option<&str>,
    options: &DumpOptions,
) -> Result<SchemaDump> {
    let dir = tempfile::Builder::new()
        .prefix("barge-schema-")
        .tempdir()
        .map_err(|e| Error::io("create a directory for pg_dump's archives", e))?;
    // Filters go in a file when pg_dump reads filter files: argv stays short however many
    // tables are left out.
    let filter_file: Option<PathBuf> = if tools.has_filter_files() && options.filters() {
        let path = dir.path().join("filter");
        std::fs::write(&path, pgtools::filter_file_text(options))
            .map_err(|e| Error::io("write the pg_dump filter file", e))?;
        Some(path)
    } else {
        None
    };
    let source = &source.pinned().await?;
    let database = pgtools::DumpSource { info: source, dbname, tls_in_use };
    let (pre_path, post_path) = (dir.path().join("pre-data"), dir.path().join("post-data"));
    let command =
        |section, out: &PathBuf| tools.dump_schema(&database, snapshot, section, options, filter_file.as_deref(), out);
    let what = format!("pg_dump of source database \"{dbname}\"");
    tokio::try_join!(
        pgtools::run_capture(command(Section::PreData, &pre_path), &what),
        pgtools::run_capture(command(Section::PostData, &post_path), &what),
    )?;
    let (pre, post) = tokio::try_join!(
        pgtools::run_capture(tools.list_archive(&pre_path), "pg_restore --list"),
        pgtools::run_capture(tools.list_archive(&post_path), "pg_restore --list"),
    )?;
    let pre = toc::parse_list(&String::from_utf8_lossy(&pre))?;
    let post = toc::parse_list(&String::from_utf8_lossy(&post))?;
    Ok(SchemaDump { dir, pre, post, tools: tools.clone(), leave_out: options.leave_out, key: random_key()? })
}

/// 32 random hexadecimal digits.
fn random_key() -> Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| Error::io("read /dev/urandom", e))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

impl SchemaDump {
    /// The given pre-data entries, in that order, as one script for the target.
    pub(crate) async fn pre_data(&self, entries: &[&TocEntry], target: &TargetSettings) -> Result<String> {
        self.render("pre-data", Some(entries), target).await
    }

    /// The given post-data entries, in that order, as one script for the target.
    pub(crate) async fn post_data(&self, entries: &[&TocEntry], target: &TargetSettings) -> Result<String> {
        self.render("post-data", Some(entries), target).await
    }

    async fn render(&self, section: &str, entries: Option<&[&TocEntry]>, target: &TargetSettings) -> Result<String> {
        let archive = self.dir.path().join(section);
        let list = match entries {
            Some(entries) => {
                let path = self.dir.path().join(format!("{section}.list"));
                std::fs::write(&path, toc::use_list(entries.iter().copied()))
                    .map_err(|e| Error::io("write pg_restore's list file", e))?;
                Some(path)
            }
            None => None,
        };
        let cmd = self.tools.render(&archive, list.as_deref(), self.leave_out, &self.key);
        let out = pgtools::run_capture(cmd, &format!("pg_restore of the {section} archive")).await?;
        let text = String::from_utf8(out)
            .map_err(|_| Error::Tool(format!("pg_restore of the {section} archive printed text that is not UTF-8")))?;
        Ok(toc::for_target(&text, &self.key, &target.known))
    }
}

/// What barge needs to know of the target server to apply a schema: the parameters it knows
/// (for [`toc::for_target`]) and how many locks one of barge's transactions may take.
pub(crate) struct TargetSettings {
    known: HashSet<String>,
    /// Locks one transaction may take: a quarter of the server's lock table, which holds
    /// `max_locks_per_transaction × (max_connections + max_prepared_transactions)` locked
    /// objects for all sessions together. A transaction that creates or alters more relations
    /// than the table has room for fails with "out of shared memory"; barge applies schema in
    /// transactions that stay within this budget instead of asking for a restart.
    pub lock_budget: usize,
}

impl TargetSettings {
    pub(crate) async fn read(db: &Db) -> Result<TargetSettings> {
        let rows = db.query("list server parameters", "select name from pg_catalog.pg_settings", &[]).await?;
        let slots: i64 = db
            .query_one(
                "read the size of the lock table",
                "select pg_catalog.current_setting('max_locks_per_transaction')::int8 \
                   * (pg_catalog.current_setting('max_connections')::int8 \
                      + pg_catalog.current_setting('max_prepared_transactions')::int8)",
                &[],
            )
            .await?
            .get(0);
        Ok(TargetSettings {
            known: rows.iter().map(|r| r.get(0)).collect(),
            lock_budget: usize::try_from(slots / 4).unwrap_or(0).max(MIN_LOCK_BUDGET),
        })
    }
}

/// The smallest lock budget barge works with, whatever the server's settings say.
const MIN_LOCK_BUDGET: usize = 64;

/// Locks applying `entry` may take: a relation that is created (`pg_class`: a table with
/// its TOAST table and index and an identity sequence, a view, a sequence) counts four; an
/// entry that changes one existing object (a comment, grants, a default, a trigger) one.
pub(crate) fn lock_weight(entry: &TocEntry) -> usize {
    const PG_CLASS: u32 = 1259;
    if entry.class == PG_CLASS { 4 } else { 1 }
}

/// `items` in their order, cut into runs whose summed [`lock_weight`]s stay within `budget`
/// (a run holds at least one item, however heavy).
pub(crate) fn lock_batches<T>(items: &[T], weight: impl Fn(&T) -> usize, budget: usize) -> Vec<&[T]> {
    let mut batches = Vec::new();
    let (mut start, mut sum) = (0, 0);
    for (i, item) in items.iter().enumerate() {
        let w = weight(item);
        if i > start && sum + w > budget {
            batches.push(&items[start..i]);
            (start, sum) = (i, 0);
        }
        sum += w;
    }
    if start < items.len() {
        batches.push(&items[start..]);
    }
    batches
}

/// Runs a rendered script, saying what to check when it fails.
pub(crate) async fn run_script(db: &Db, what: &str, script: &str) -> Result<()> {
    db.client().batch_execute(script).await.map_err(|e| script_error(db, what, &e))
}

fn script_error(db: &Db, what: &str, e: &tokio_postgres::Error) -> Error {
    let err = db.err(what, e);
    let extension = err.to_string().contains("extension");
    let hint = match err.sqlstate() {
        Some(sqlstate::UNDEFINED_OBJECT) => {
            "something it names is missing on the target: --roles copies roles, --no-owner and --no-acl leave ownership and grants out"
        }
        Some(sqlstate::UNDEFINED_FILE) | Some(sqlstate::FEATURE_NOT_SUPPORTED) if extension => {
            "install the extension on the target server"
        }
        Some(sqlstate::UNDEFINED_TABLE) | Some(sqlstate::UNDEFINED_FUNCTION) => {
            "it depends on an object that is missing on the target; check the filters (--exclude-*, --include-*)"
        }
        Some(sqlstate::OUT_OF_MEMORY) => {
            "the target ran out of lock slots: other sessions hold many locks; run again when they are done (--resume), or raise max_locks_per_transaction on the target"
        }
        _ => return err,
    };
    err.with_hint(hint)
}

#[cfg(test)]
mod tests {
    use super::lock_batches;

    #[test]
    fn batches_stay_within_the_lock_budget_in_order() {
        let weights = [4, 4, 1, 1, 4, 1, 9, 1];
        let batches = lock_batches(&weights, |w| *w, 8);
        assert_eq!(batches, [&[4, 4][..], &[1, 1, 4, 1][..], &[9][..], &[1][..]]);
        assert_eq!(batches.concat(), weights, "every item once, in order");
        assert!(lock_batches(&[] as &[usize], |w| *w, 8).is_empty());
        assert_eq!(lock_batches(&[1; 10], |w| *w, 100).len(), 1);
    }
}
