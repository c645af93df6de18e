//! Copying rows while the schema is still going in. Pre-data is applied in transactions that
//! fit the target's lock table ([`crate::schema::lock_batches`]); for thousands of small
//! tables that takes seconds, and their rows need not wait for all of it. A small table's
//! rows can go in as soon as every pre-data transaction that creates or changes the table
//! has committed: this module says, per table, how many batches that is (its *gate*).
//!
//! A table is changed by the entry that creates it (matched by pg_class OID), by the
//! sequences it owns (identity and serial columns), by the tables that inherit from it, and
//! by the entries pg_dump labels with its name: comments, grants and security labels on it
//! or its columns, column defaults, constraints dumped apart and its partition attachment.
//! Labels are matched against the table's own schema and name (`pg_restore --list` writes
//! line breaks in names as spaces), so a name that looks like another's only makes a table
//! wait longer, never less. Tables larger than [`rows::SMALL_TABLE`], or copied in parts,
//! wait for the whole of pre-data: a later batch altering one would wait for its long COPY.
//!
//! What a match could miss cannot break the copy: while pre-data runs, the pipeline's
//! sessions give up a lock they cannot get within [`LOCK_WAIT`] and retry after pre-data
//! ([`crate::pipeline`]), and a pre-data batch that collides with them is run again
//! ([`crate::init`]).

use std::collections::HashMap;

use crate::{
    catalog::RelationName,
    plan::{DatabasePlan, TablePlan},
    rows,
    toc::TocEntry,
};

/// How long a copy session waits for a lock while pre-data runs, well under the server's
/// `deadlock_timeout` (1 s by default): a copy that waits on the schema gives way to it.
pub(crate) const LOCK_WAIT: &str = "100ms";

/// Whether a table may be copied before all of pre-data has committed.
pub(crate) fn early(table: &TablePlan) -> bool {
    table.parts.len() == 1 && table.bytes <= rows::SMALL_TABLE && !table.schema_only
}

/// pg_class: the catalog of the entries that create relations.
const PG_CLASS: u32 = 1259;

/// Plan tables (their index in the plan) by the OID of their relation on the source.
pub(crate) fn plan_tables(plan: &DatabasePlan, relations: &HashMap<u32, RelationName>) -> HashMap<u32, usize> {
    let by_name: HashMap<(&str, &str), usize> =
        plan.tables.iter().enumerate().map(|(i, t)| ((t.schema.as_str(), t.name.as_str()), i)).collect();
    relations.values().filter_map(|r| by_name.get(&(r.schema.as_str(), r.name.as_str())).map(|&t| (r.oid, t))).collect()
}

/// Per batch, the plan tables its entries create (matched by pg_class OID).
pub(crate) fn created(
    plan: &DatabasePlan,
    batches: &[&[TocEntry]],
    relations: &HashMap<u32, RelationName>,
) -> Vec<Vec<usize>> {
    let by_oid = plan_tables(plan, relations);
    batches
        .iter()
        .map(|batch| batch.iter().filter(|e| e.class == PG_CLASS).filter_map(|e| by_oid.get(&e.oid).copied()).collect())
        .collect()
}

/// Entry types whose label names a table (or a table's column) right after the schema.
const LABELLED: &[(&str, char)] = &[
    ("ACL {s} TABLE {n}", ' '),
    ("ACL {s} COLUMN {n}", '.'),
    ("COMMENT {s} TABLE {n}", ' '),
    ("COMMENT {s} COLUMN {n}", '.'),
    ("SECURITY LABEL {s} TABLE {n}", ' '),
    ("SECURITY LABEL {s} COLUMN {n}", '.'),
    ("DEFAULT {s} {n}", ' '),
    ("CONSTRAINT {s} {n}", ' '),
    ("CHECK CONSTRAINT {s} {n}", ' '),
    ("TABLE ATTACH {s} {n}", ' '),
];

/// Per plan table, the number of pre-data `batches` that must have committed before its
/// rows may be copied: `batches.len()` for a table that waits for all of them.
pub(crate) fn gates(
    plan: &DatabasePlan,
    batches: &[&[TocEntry]],
    relations: &HashMap<u32, RelationName>,
) -> Vec<usize> {
    let all = batches.len();
    let by_oid = plan_tables(plan, relations);
    let table_of = |oid: u32| by_oid.get(&oid).copied();
    // Label prefixes naming each table, and the delimiter that must follow them.
    let listed = |s: &str| s.replace(['\n', '\r'], " ");
    let mut labels: HashMap<String, Vec<(usize, char)>> = HashMap::new();
    for (i, t) in plan.tables.iter().enumerate() {
        for (pattern, delimiter) in LABELLED {
            let prefix = pattern.replace("{s}", &listed(&t.schema)).replace("{n}", &listed(&t.name));
            labels.entry(prefix).or_default().push((i, *delimiter));
        }
    }
    // No table is found in no batch: it waits for all.
    let mut gate: Vec<Option<usize>> = vec![None; plan.tables.len()];
    let mut touch = |table: usize, batch: usize| {
        let g = &mut gate[table];
        *g = Some(g.map_or(batch + 1, |g| g.max(batch + 1)));
    };
    for (b, batch) in batches.iter().enumerate() {
        for entry in batch.iter() {
            if entry.class == PG_CLASS
                && let Some(relation) = relations.get(&entry.oid)
            {
                if let Some(t) = table_of(entry.oid) {
                    touch(t, b);
                }
                for &other in relation.owned_by.iter().chain(&relation.parents) {
                    if let Some(t) = table_of(other) {
                        touch(t, b);
                    }
                }
            }
            let label = entry.label.as_str();
            for (at, c) in label.char_indices() {
                if c != ' ' && c != '.' {
                    continue;
                }
                for &(t, delimiter) in labels.get(&label[..at]).map(Vec::as_slice).unwrap_or_default() {
                    if delimiter == c {
                        touch(t, b);
                    }
                }
            }
        }
    }
    plan.tables.iter().zip(gate).map(|(t, g)| if early(t) { g.unwrap_or(all).min(all) } else { all }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Part;
    use crate::toc::Kind;

    fn table(schema: &str, name: &str, bytes: u64) -> TablePlan {
        TablePlan::for_tests(schema, name, bytes)
    }

    fn plan(tables: Vec<TablePlan>) -> DatabasePlan {
        DatabasePlan::for_tests(tables)
    }

    fn entry(id: u32, class: u32, oid: u32, label: &str) -> TocEntry {
        TocEntry { id, class, oid, kind: Kind::Other, label: label.into() }
    }

    fn relation(
        oid: u32,
        schema: &str,
        name: &str,
        kind: char,
        owned_by: Option<u32>,
        parents: &[u32],
    ) -> RelationName {
        RelationName { oid, schema: schema.into(), name: name.into(), kind, owned_by, parents: parents.to_vec() }
    }

    #[test]
    fn a_table_waits_for_every_batch_that_changes_it() {
        // GIVEN small tables a, "a b" (a name that starts like a's labels), c and child,
        // a large table big, and a table split in parts
        let mut split = table("s", "split", 10);
        split.parts = vec![Part::Whole, Part::Whole];
        let plan = plan(vec![
            table("s", "a", 10),
            table("s", "a b", 10),
            table("s", "c", 10),
            table("s", "child", 10),
            table("s", "big", rows::SMALL_TABLE + 1),
            split,
            table("s", "x\ny", 10),
        ]);
        let relations: HashMap<u32, RelationName> = [
            relation(1, "s", "a", 'r', None, &[]),
            relation(2, "s", "a b", 'r', None, &[]),
            relation(3, "s", "c", 'r', None, &[]),
            relation(4, "s", "c_id_seq", 'S', Some(3), &[]),
            relation(5, "s", "child", 'r', None, &[1]),
            relation(6, "s", "big", 'r', None, &[]),
            relation(7, "s", "split", 'r', None, &[]),
            relation(8, "s", "x\ny", 'r', None, &[]),
        ]
        .into_iter()
        .map(|r| (r.oid, r))
        .collect();
        let batches: Vec<Vec<TocEntry>> = vec![
            // batch 0 creates a, a b, c, big, split and x\ny
            vec![
                entry(10, 1259, 1, "TABLE s a owner"),
                entry(11, 1259, 2, "TABLE s a b owner"),
                entry(12, 1259, 3, "TABLE s c owner"),
                entry(13, 1259, 6, "TABLE s big owner"),
                entry(14, 1259, 7, "TABLE s split owner"),
                entry(15, 1259, 8, "TABLE s x y owner"),
            ],
            // batch 1: c's identity sequence, a grant on "a b", a comment on a column of x\ny
            vec![
                entry(20, 1259, 4, "SEQUENCE s c_id_seq owner"),
                entry(21, 0, 0, "ACL s TABLE a b owner"),
                entry(22, 0, 0, "COMMENT s COLUMN x y.col owner"),
            ],
            // batch 2: child, inheriting from a
            vec![entry(30, 1259, 5, "TABLE s child owner")],
            // batch 3: a function, naming nothing copied
            vec![entry(40, 1255, 99, "FUNCTION s a() owner")],
        ];
        let slices: Vec<&[TocEntry]> = batches.iter().map(Vec::as_slice).collect();
        // WHEN the gates are computed
        let gates = gates(&plan, &slices, &relations);
        // THEN a waits for the child that inherits from it and for the grant on "a b", which
        // may be its own (a name with a space); "a b" for that grant; c for its sequence;
        // child for itself; big and split for everything; x\ny for its column's comment
        assert_eq!(gates, [3, 2, 2, 3, 4, 4, 2]);
    }

    #[test]
    fn a_table_in_no_batch_waits_for_all() {
        let plan = plan(vec![table("s", "a", 10)]);
        let batches: Vec<&[TocEntry]> = vec![&[], &[]];
        assert_eq!(gates(&plan, &batches, &HashMap::new()), [2]);
    }
}
