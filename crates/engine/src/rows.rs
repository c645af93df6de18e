//! Moving rows: one table part is one `COPY … TO STDOUT` on the source relayed into one
//! `COPY … FROM STDIN` on the target, binary unless a column needs text, with no temporary
//! files and a bounded buffer; the part's progress mark commits in the same transaction.
//! Large objects move in batches the same way: data, owner, grants and comment together.

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt, pin_mut};

use crate::{
    db::Db,
    error::Result,
    ident, marks,
    plan::{Part, TablePlan},
    progress::PartCounter,
    request::Options,
    stats,
};

/// Size of the messages the relay writes to the target. Memory per stream stays near this.
const RELAY_CHUNK: usize = 64 << 10;

/// The two COPY statements for a part. A table copied whole is truncated and loaded with
/// `FREEZE` in one transaction: its rows arrive frozen and its pages all-visible, so index
/// builds, foreign key checks and ANALYZE set no hint bits, index-only scans work at once,
/// and the target never has to vacuum-freeze the copy later.
pub(crate) fn copy_statements(table: &TablePlan, part: &Part) -> (String, String) {
    let qualified = table.qualified();
    let columns = if table.columns.is_empty() {
        String::new()
    } else {
        format!(" ({})", table.columns.iter().map(|c| ident::quote(c)).collect::<Vec<_>>().join(", "))
    };
    let format = if table.text_copy { "" } else { " (format binary)" };
    let into_options = match (table.text_copy, freezes(table)) {
        (false, true) => " (format binary, freeze)",
        (false, false) => " (format binary)",
        (true, true) => " (freeze)",
        (true, false) => "",
    };
    let out = match part.predicate() {
        None => format!("copy {qualified}{columns} to stdout{format}"),
        Some(predicate) => {
            let select = if table.columns.is_empty() {
                String::new()
            } else {
                table.columns.iter().map(|c| ident::quote(c)).collect::<Vec<_>>().join(", ")
            };
            format!("copy (select {select} from only {qualified} where {predicate}) to stdout{format}")
        }
    };
    let into = format!("copy {qualified}{columns} from stdin{into_options}");
    (out, into)
}

/// Tables up to this size, copied whole, are loaded, indexed and analyzed in one transaction
/// by the COPY stream that copies them: for them, the round trips and commits of separate
/// steps cost more than the work.
pub(crate) const SMALL_TABLE: u64 = 1 << 20;

/// Whether a table's rows load with `COPY … FREEZE`: only when one transaction loads it all,
/// and not for a small table, whose few pages are not worth the `TRUNCATE` it needs.
pub(crate) fn freezes(table: &TablePlan) -> bool {
    table.parts.len() == 1 && table.bytes > SMALL_TABLE
}

/// What runs after a part's rows, in its transaction: for a small table copied whole, its
/// index builds and key constraints (each with its mark) and its `ANALYZE` (for a table this
/// small, cheaper than carrying the source's statistics: `crate::stats`).
#[derive(Default)]
pub(crate) struct Then<'a> {
    /// (what, mark, SQL) of each statement.
    pub steps: Vec<(String, &'a str, &'a str)>,
    pub analyze: bool,
}

/// Copies one part, runs `then`, and commits it all with the part's mark `step`. Returns the
/// rows copied.
pub(crate) async fn copy_part(
    source: &Db,
    target: &Db,
    table: &TablePlan,
    part: &Part,
    step: &str,
    counter: &PartCounter<'_>,
    then: &Then<'_>,
) -> Result<u64> {
    let (out_sql, in_sql) = copy_statements(table, part);
    let what = format!("copy {}", table.display());
    target
        .in_transaction(&what, async || {
            if freezes(table) {
                // FREEZE needs the table emptied in this transaction; it is empty anyway (or
                // holds only an attempt that was rolled back).
                target.batch(&what, &format!("truncate only {}", table.qualified())).await?;
            }
            let sink = target.client().copy_in(&in_sql).await.map_err(|e| target.err(&what, &e))?;
            let stream = source.client().copy_out(&out_sql).await.map_err(|e| source.err(&what, &e))?;
            pin_mut!(sink, stream);
            let mut bytes = 0u64;
            // The source sends a message per row; the target gets them in 64 KiB messages, which
            // saves both ends per-message work and this process most of its write calls.
            let mut buffer = BytesMut::with_capacity(RELAY_CHUNK);
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| source.err(&what, &e))?;
                bytes += chunk.len() as u64;
                counter.add(chunk.len() as u64);
                buffer.extend_from_slice(&chunk);
                if buffer.len() >= RELAY_CHUNK {
                    let full = std::mem::replace(&mut buffer, BytesMut::with_capacity(RELAY_CHUNK));
                    sink.feed(full.freeze()).await.map_err(|e| target.err(&what, &e))?;
                }
            }
            if !buffer.is_empty() {
                sink.feed(buffer.freeze()).await.map_err(|e| target.err(&what, &e))?;
            }
            let rows = sink.as_mut().finish().await.map_err(|e| target.err(&what, &e))?;
            // The index builds, key constraints and ANALYZE, and the marks of the part and of
            // each of them go out together (the client pipelines them): one round trip. A failure aborts
            // the transaction, so what follows it fails too; the first error is returned.
            let mut sql: String =
                then.steps.iter().map(|(_, _, sql)| format!("{};\n", sql.trim_end_matches(';'))).collect();
            if then.analyze {
                sql.push_str(&format!("{};\n", stats::analyze_sql(table)));
            }
            let steps: Vec<&str> = then.steps.iter().map(|(_, mark, _)| *mark).collect();
            let what = format!("build the indexes and keys of {} and analyze it", table.display());
            let (built, marked) = tokio::join!(
                async { if sql.is_empty() { Ok(()) } else { target.batch(&what, &sql).await } },
                marks::record_with(target, step, rows as i64, bytes as i64, &steps),
            );
            built?;
            marked?;
            Ok(rows)
        })
        .await
}

/// Large objects are read and written in pieces of this size.
const LO_CHUNK: i32 = 1 << 20;

/// What one large-object batch moved.
pub(crate) struct LoCopied {
    pub objects: u64,
    pub bytes: u64,
}

/// Copies the large objects with OIDs in `[first, last]`: same OID, data, owner, grants and
/// comment, committed with the batch's mark.
pub(crate) async fn copy_large_objects(
    source: &Db,
    target: &Db,
    (first, last): (u32, u32),
    options: &Options,
    step: &str,
    counter: &PartCounter<'_>,
) -> Result<LoCopied> {
    let (no_owner, no_acl) = (options.no_owner, options.no_acl);
    let what = format!("copy large objects {first}..{last}");
    let rows = source.query(&what, include_str!("sql/large_objects.sql"), &[&first, &last]).await?;
    target
        .in_transaction(&what, async || {
            let mut copied = LoCopied { objects: 0, bytes: 0 };
            for row in &rows {
                let oid: u32 = row.get("oid");
                target.query_one(&what, "select pg_catalog.lo_create($1)", &[&oid]).await?;
                let mut offset: i64 = 0;
                loop {
                    let data: Vec<u8> = source
                        .query_one(&what, "select pg_catalog.lo_get($1, $2, $3)", &[&oid, &offset, &LO_CHUNK])
                        .await?
                        .get(0);
                    if data.is_empty() {
                        break;
                    }
                    target.query_one(&what, "select pg_catalog.lo_put($1, $2, $3)", &[&oid, &offset, &data]).await?;
                    offset += data.len() as i64;
                    counter.add(data.len() as u64);
                    copied.bytes += data.len() as u64;
                    if data.len() < LO_CHUNK as usize {
                        break;
                    }
                }
                if !no_owner {
                    let owner: String = row.get("owner");
                    target.batch(&what, &format!("alter large object {oid} owner to {}", ident::quote(&owner))).await?;
                }
                if !no_acl && row.get::<_, bool>("has_acl") {
                    // Grants to others; the owner keeps the rights ownership gives.
                    let grants: Vec<String> = row.get("grants");
                    if !grants.is_empty() {
                        target.batch(&what, &format!("{};", grants.join(";\n"))).await?;
                    }
                }
                if let Some(comment) = row.get::<_, Option<String>>("comment") {
                    // The target server quotes the comment; no value is formatted here.
                    let statement: String = target
                        .query_one(
                            &what,
                            "select pg_catalog.format('comment on large object %s is %L', $1::oid, $2::text)",
                            &[&oid, &comment],
                        )
                        .await?
                        .get(0);
                    target.batch(&what, &statement).await?;
                }
                copied.objects += 1;
            }
            marks::record(target, step, copied.objects as i64, copied.bytes as i64).await?;
            Ok(copied)
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text_copy: bool) -> TablePlan {
        TablePlan {
            schema: "s".into(),
            name: "Odd \"t\"".into(),
            bytes: 0,
            est_rows: 0,
            kind: crate::plan::TableKind::Table,
            schema_only: false,
            text_copy,
            columns: vec!["id".into(), "Value".into()],
            parts: vec![Part::Whole],
            own_autovacuum: false,
            extended_statistics: false,
        }
    }

    #[test]
    fn copy_statements_quote_and_choose_the_format() {
        let mut large = table(false);
        large.bytes = SMALL_TABLE + 1;
        let (out, into) = copy_statements(&large, &Part::Whole);
        assert_eq!(out, "copy \"s\".\"Odd \"\"t\"\"\" (\"id\", \"Value\") to stdout (format binary)");
        assert_eq!(into, "copy \"s\".\"Odd \"\"t\"\"\" (\"id\", \"Value\") from stdin (format binary, freeze)");
        // A small table is not frozen: its few pages are not worth the TRUNCATE FREEZE needs.
        let (_, into) = copy_statements(&table(false), &Part::Whole);
        assert_eq!(into, "copy \"s\".\"Odd \"\"t\"\"\" (\"id\", \"Value\") from stdin (format binary)");
        let part = Part::Key { column: "id".into(), from: Some(10), to: None };
        let mut split = table(true);
        split.parts = vec![Part::Whole, part.clone()];
        let (out, into) = copy_statements(&split, &part);
        assert_eq!(
            out,
            "copy (select \"id\", \"Value\" from only \"s\".\"Odd \"\"t\"\"\" where \"id\" >= 10) to stdout"
        );
        assert_eq!(into, "copy \"s\".\"Odd \"\"t\"\"\" (\"id\", \"Value\") from stdin");
    }
}
