//! Schema changes on the source while a sync streams (docs/sync.md, "Schema changes").
//!
//! Logical replication carries rows, not DDL. Each sync records the structure of the tables
//! it carries ([`Shape`]: columns by number, indexes, kind); every status compares the
//! source's structure with it and names each difference. Those that only add to the target
//! or widen it — a column added (with or without a default), an index created, a table
//! created where the sync's filters select it, a type widened, `NOT NULL` dropped, a default
//! changed — barge applies to the target itself ([`Step::Apply`]): the stream loop does so
//! as soon as it sees them, `barge sync apply-ddl` on request. The target's apply stops at the
//! first row that needs the change (a column it lacks, a value its type cannot hold) and
//! goes on once the change is there, so rows and DDL arrive in order.
//!
//! Everything else (a column dropped or renamed, a type narrowed, a table dropped, renamed or
//! recreated with another structure, an index dropped, a constraint added) is never run
//! unasked ([`Step::Confirm`]): the stream loop pauses the sync and names the exact
//! statements that make the target match, which `barge sync apply-ddl --destructive` runs
//! (or the user runs them, and apply-ddl sees the target already matches).
//!
//! Statements are built from the server's own renderings of names, types and expressions
//! (`format_type`, `pg_get_expr`, `pg_get_indexdef`, `pg_get_constraintdef`, as pg_dump
//! uses), names quoted by barge, and each is sent alone in the extended protocol, where
//! the server refuses more than one statement. A default is set on the target, never
//! evaluated there: rows that existed before an `ADD COLUMN … DEFAULT` get the exact value
//! the source gave them (`attmissingval`), or the table is copied again when the source
//! computed a value per row.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    sync::Arc,
};

use serde::{Deserialize, Serialize};

use super::*;
use crate::{
    db::Db,
    error::{Error, Result},
    ident,
    progress::{Event, ProgressSink},
    request::Request,
};

/// A table's structure as a sync records it: what logical replication and the target
/// depend on (`sql/schema_fingerprint.sql`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct Shape {
    /// The table's OID on the source: the same name with another OID was dropped and created
    /// again (and left the publication).
    pub(super) oid: i64,
    /// `relkind`, `relpersistence` and `relreplident`, one letter each.
    pub(super) kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) replica_index: Option<String>,
    /// The form earlier barge versions recorded, to compare their records with.
    pub(super) digest: String,
    pub(super) columns: Vec<Column>,
    pub(super) indexes: BTreeMap<String, Index>,
}

/// One column.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct Column {
    pub(super) num: i16,
    pub(super) name: String,
    /// `format_type`: the type with its modifier, as SQL.
    #[serde(rename = "type")]
    pub(super) type_name: String,
    pub(super) type_oid: i64,
    pub(super) typmod: i32,
    pub(super) not_null: bool,
    pub(super) generated: bool,
    /// A collation other than the type's, qualified and quoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) collation: Option<String>,
    /// The default expression (`pg_get_expr`), for a generated column its expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) default: Option<String>,
    /// The value rows older than the column read (a constant default given when it was
    /// added). Read from the source each time, never recorded.
    #[serde(default, skip_serializing)]
    pub(super) missing: Option<String>,
}

/// One index, by name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct Index {
    /// `pg_get_indexdef`.
    pub(super) definition: String,
    /// The primary key, unique or exclusion constraint it backs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) constraint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) constraint_definition: Option<String>,
    #[serde(default = "valid")]
    pub(super) valid: bool,
    /// A partition's index created by its partitioned table's: it comes and goes with it.
    #[serde(default)]
    pub(super) inherited: bool,
}

fn valid() -> bool {
    true
}

impl Shape {
    /// Equal as far as the target is concerned (the OID and the missing values aside).
    fn same_structure(&self, other: &Shape) -> bool {
        // The column numbers and the missing values aside.
        let columns = |s: &Shape| -> Vec<Column> {
            s.columns.iter().map(|c| Column { num: 0, missing: None, ..c.clone() }).collect()
        };
        let indexes = |s: &Shape| -> BTreeMap<String, (String, Option<String>)> {
            s.indexes
                .iter()
                .filter(|(_, i)| !i.inherited)
                .map(|(n, i)| (n.clone(), (i.definition.clone(), i.constraint_definition.clone())))
                .collect()
        };
        self.kind == other.kind
            && self.replica_index == other.replica_index
            && columns(self) == columns(other)
            && indexes(self) == indexes(other)
    }

    fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// A table as the sync's record holds it: its [`Shape`], or the digest an earlier barge
/// version recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub(super) enum Recorded {
    Shape(Shape),
    Digest(String),
}

/// `schema.table` → [`Shape`], for every table of a database.
pub(super) async fn shapes(db: &Db) -> Result<BTreeMap<String, Shape>> {
    let rows = db.query("read the tables' structure", include_str!("../sql/schema_fingerprint.sql"), &[]).await?;
    let mut shapes = BTreeMap::new();
    for r in rows {
        let unreadable = |e: serde_json::Error| Error::Internal(format!("the tables' structure is unreadable: {e}"));
        let shape = Shape {
            oid: r.get("oid"),
            kind: r.get("kind"),
            replica_index: r.get("replica_index"),
            digest: r.get("digest"),
            columns: serde_json::from_str(r.get::<_, &str>("columns")).map_err(unreadable)?,
            indexes: serde_json::from_str(r.get::<_, &str>("indexes")).map_err(unreadable)?,
        };
        shapes.insert(format!("{}.{}", r.get::<_, String>("schema"), r.get::<_, String>("name")), shape);
    }
    Ok(shapes)
}

/// One difference between the sync's record and the source, with what makes the target
/// match.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Change {
    /// `schema.table` as the source names it now (for a dropped table, as it was).
    pub(super) table: String,
    /// What changed, in words (`column "note" added (text)`).
    pub(super) what: String,
    pub(super) step: Step,
    /// For a table renamed on the source: its new `schema.table`.
    pub(super) renamed_to: Option<String>,
}

/// Whether barge applies a change by itself.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Step {
    /// Adds to or widens the target: applied unasked.
    Apply(Vec<Action>),
    /// Removes, renames or narrows: only on request (`apply-ddl --destructive`).
    Confirm(Vec<Action>),
}

/// One thing done on the target, in order.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Action {
    /// One statement.
    Sql(String),
    /// One statement, once the target applied every change the source made so far (a
    /// default set only after the rows queued before it arrived with the old one).
    SqlAfterCatchUp(String),
    /// The table's rows copied again (`resync`).
    Resync,
    /// The table joins the sync (created on the target and copied, as `add`).
    Add,
    /// The table leaves the sync's record and subscription; the target keeps its rows.
    Forget,
    /// No statement barge can name: the user makes the target's table match, and
    /// `apply-ddl --destructive` accepts the source's structure.
    ByHand,
}

impl Action {
    fn statement(&self) -> Option<&str> {
        match self {
            Action::Sql(s) | Action::SqlAfterCatchUp(s) => Some(s),
            _ => None,
        }
    }
}

impl Change {
    fn new(table: &str, what: impl Into<String>, step: Step) -> Change {
        Change { table: table.to_owned(), what: what.into(), step, renamed_to: None }
    }

    /// `public.t: column "a" renamed to "b"`, with the statements when barge does not run
    /// them unasked.
    pub(super) fn describe(&self) -> String {
        match &self.step {
            Step::Apply(_) => format!("{}: {} (barge applies it: `barge sync apply-ddl`)", self.table, self.what),
            Step::Confirm(actions) => {
                let statements: Vec<String> =
                    actions.iter().filter_map(|a| a.statement()).map(|s| format!("{s};")).collect();
                let forget = actions.contains(&Action::Forget);
                let mut out = format!("{}: {} — ", self.table, self.what);
                if actions.is_empty() {
                    out.push_str("the target already matches");
                } else if actions.contains(&Action::ByHand) {
                    out.push_str("make the target's table match the source's, then `barge sync apply-ddl --destructive` accepts it");
                } else {
                    if !statements.is_empty() {
                        out.push_str(&format!("on the target: {}", statements.join(" ")));
                    }
                    if forget {
                        if !statements.is_empty() {
                            out.push_str("; ");
                        }
                        out.push_str("the table leaves the sync and the target keeps its rows");
                    }
                    out.push_str(" (`barge sync apply-ddl --destructive` does it)");
                }
                out
            }
        }
    }

    /// Waits for the user's word: a change barge does not make unasked that the target does
    /// not have yet.
    pub(super) fn waits_for_confirmation(&self) -> bool {
        matches!(&self.step, Step::Confirm(actions) if !actions.is_empty())
    }

    fn actions(&self) -> &[Action] {
        match &self.step {
            Step::Apply(a) | Step::Confirm(a) => a,
        }
    }

    /// Whether applying it needs the target to stream (a copy, or waiting for the apply).
    fn needs_streaming(&self) -> bool {
        self.actions().iter().any(|a| matches!(a, Action::Resync | Action::Add | Action::SqlAfterCatchUp(_)))
    }
}

const INT2: i64 = 21;
const INT4: i64 = 23;
const INT8: i64 = 20;
const FLOAT4: i64 = 700;
const FLOAT8: i64 = 701;
const NUMERIC: i64 = 1700;
const VARCHAR: i64 = 1043;
const TEXT: i64 = 25;

/// Whether every value of `from`'s type fits `to`'s unchanged.
fn widens(from: &Column, to: &Column) -> bool {
    let numeric = |typmod: i32| (typmod != -1).then(|| (((typmod - 4) >> 16) & 0xffff, (typmod - 4) & 0xffff));
    match (from.type_oid, to.type_oid) {
        (INT2, INT4 | INT8) | (INT4, INT8) | (FLOAT4, FLOAT8) | (VARCHAR, TEXT) => true,
        (INT2 | INT4 | INT8, NUMERIC) => to.typmod == -1,
        (VARCHAR, VARCHAR) => to.typmod == -1 || (from.typmod != -1 && to.typmod >= from.typmod),
        (NUMERIC, NUMERIC) => match (numeric(from.typmod), numeric(to.typmod)) {
            (_, None) => true,
            (None, Some(_)) => false,
            (Some((p1, s1)), Some((p2, s2))) => s2 >= s1 && p2 - s2 >= p1 - s1,
        },
        _ => false,
    }
}

/// `ALTER TABLE "s"."t" `.
fn alter(table: &(String, String)) -> String {
    format!("ALTER TABLE {} ", ident::qualified(&table.0, &table.1))
}

fn split(key: &str, shape_names: &BTreeMap<String, (String, String)>) -> (String, String) {
    shape_names.get(key).cloned().unwrap_or_else(|| {
        let (s, t) = key.split_once('.').unwrap_or(("public", key));
        (s.to_owned(), t.to_owned())
    })
}

/// The type of a column as SQL, with its collation.
fn typed(c: &Column) -> String {
    match &c.collation {
        Some(collation) => format!("{} COLLATE {collation}", c.type_name),
        None => c.type_name.clone(),
    }
}

/// What the sync's record (`baseline`), the source now (`source`, every table, and
/// `selected`, those the sync's filters select that were not taken out of it) and the
/// target now (`target`) call for. `names` maps `schema.table` to its parts, for tables of
/// either side.
pub(super) fn changes(
    baseline: &BTreeMap<String, Recorded>,
    source: &BTreeMap<String, Shape>,
    selected: &HashSet<String>,
    target: &BTreeMap<String, Shape>,
    names: &BTreeMap<String, (String, String)>,
) -> Vec<Change> {
    let mut out = Vec::new();
    let recorded_oids: BTreeMap<i64, &String> = baseline
        .iter()
        .filter_map(|(k, r)| match r {
            Recorded::Shape(s) => Some((s.oid, k)),
            Recorded::Digest(_) => None,
        })
        .collect();
    // Renamed: a recorded OID under another name.
    let mut renamed: BTreeMap<&String, &String> = BTreeMap::new();
    for (key, shape) in source {
        if baseline.contains_key(key) {
            continue;
        }
        if let Some(old) = recorded_oids.get(&shape.oid)
            && source.get(*old).is_none_or(|s| s.oid != shape.oid)
        {
            renamed.insert(*old, key);
        }
    }
    for (key, recorded) in baseline {
        let table = split(key, names);
        let Some(now) = source.get(key) else {
            if let Some(new_key) = renamed.get(key) {
                let new = split(new_key, names);
                let mut actions = Vec::new();
                let at_target = target.contains_key(*new_key) && !target.contains_key(key);
                if !at_target {
                    let mut current = table.clone();
                    if new.0 != table.0 {
                        actions.push(Action::Sql(format!("{}SET SCHEMA {}", alter(&current), ident::quote(&new.0))));
                        current.0 = new.0.clone();
                    }
                    if new.1 != table.1 {
                        actions.push(Action::Sql(format!("{}RENAME TO {}", alter(&current), ident::quote(&new.1))));
                    }
                }
                out.push(Change {
                    table: key.clone(),
                    what: format!("renamed to {new_key}"),
                    step: Step::Confirm(actions),
                    renamed_to: Some((*new_key).clone()),
                });
            } else {
                out.push(Change::new(key, "dropped on the source", Step::Confirm(vec![Action::Forget])));
            }
            continue;
        };
        let before = match recorded {
            Recorded::Shape(s) => s,
            Recorded::Digest(d) => {
                if *d != now.digest {
                    out.push(Change::new(
                        key,
                        "columns, types or replica identity changed (recorded by an earlier barge, which kept no column list)",
                        Step::Confirm(vec![Action::ByHand]),
                    ));
                }
                continue;
            }
        };
        if before.oid != now.oid {
            let step = if before.same_structure(now) {
                Step::Apply(vec![Action::Resync])
            } else {
                Step::Confirm(vec![
                    Action::Sql(format!("DROP TABLE {}", ident::qualified(&table.0, &table.1))),
                    Action::Add,
                ])
            };
            out.push(Change::new(key, "dropped and created again on the source", step));
            continue;
        }
        out.extend(table_changes(key, &table, before, now, target.get(key)));
    }
    let renamed_to: BTreeSet<&String> = renamed.values().copied().collect();
    for (key, shape) in
        source.iter().filter(|(k, _)| !baseline.contains_key(*k) && selected.contains(*k) && !renamed_to.contains(k))
    {
        let (what, step) = if shape.kind.as_bytes().get(1) == Some(&b'u') {
            // Its rows do not replicate, and `add` takes only logged tables.
            ("created on the source, unlogged (its rows do not replicate)", Step::Confirm(vec![Action::ByHand]))
        } else {
            ("created on the source where the sync's filters select it", Step::Apply(vec![Action::Add]))
        };
        out.push(Change::new(key, what, step));
    }
    out
}

/// The changes to one table that kept its OID. `target` is the target's table, when it has it.
fn table_changes(
    key: &str,
    table: &(String, String),
    before: &Shape,
    now: &Shape,
    target: Option<&Shape>,
) -> Vec<Change> {
    let mut out = Vec::new();
    let change = |what: String, step: Step| Change::new(key, what, step);
    let on_target = |name: &str| target.and_then(|t| t.column(name));
    let column = |c: &Column| ident::quote(&c.name);
    let a = alter(table);
    if before.kind != now.kind || before.replica_index != now.replica_index {
        let (b, n) = (before.kind.as_bytes(), now.kind.as_bytes());
        let mut actions = Vec::new();
        if b.get(1) != n.get(1) {
            let logged = if n.get(1) == Some(&b'u') { "UNLOGGED" } else { "LOGGED" };
            actions.push(Action::Sql(format!("{a}SET {logged}")));
        }
        if b.get(2) != n.get(2) || before.replica_index != now.replica_index {
            let identity = match (n.get(2), &now.replica_index) {
                (Some(b'f'), _) => "FULL".to_owned(),
                (Some(b'n'), _) => "NOTHING".to_owned(),
                (Some(b'i'), Some(index)) => format!("USING INDEX {}", ident::quote(index)),
                _ => "DEFAULT".to_owned(),
            };
            actions.push(Action::Sql(format!("{a}REPLICA IDENTITY {identity}")));
        }
        out.push(change("persistence or replica identity changed".into(), Step::Confirm(actions)));
    }
    let by_num = |s: &Shape, n: i16| s.columns.iter().find(|c| c.num == n).cloned();
    // A column dropped and added again under its name: the target's values are not the
    // source's any more.
    let readded = |old: &Column| now.columns.iter().find(|c| c.name == old.name && by_num(before, c.num).is_none());
    for old in &before.columns {
        if by_num(now, old.num).is_none() {
            let mut actions = if on_target(&old.name).is_some() {
                vec![Action::Sql(format!("{a}DROP COLUMN {}", column(old)))]
            } else {
                vec![]
            };
            let what = match readded(old) {
                Some(c) => {
                    actions.extend(added_column(key, &a, c, None).actions().iter().cloned());
                    format!("column \"{}\" dropped and added again", old.name)
                }
                None => format!("column \"{}\" dropped", old.name),
            };
            out.push(change(what, Step::Confirm(actions)));
        }
    }
    for c in &now.columns {
        let Some(old) = by_num(before, c.num) else {
            if !before.columns.iter().any(|o| o.name == c.name && by_num(now, o.num).is_none()) {
                out.push(added_column(key, &a, c, on_target(&c.name)));
            }
            continue;
        };
        let mut name = old.name.clone();
        if old.name != c.name {
            let done = on_target(&c.name).is_some() && on_target(&old.name).is_none();
            let actions = if done {
                vec![]
            } else {
                vec![Action::Sql(format!("{a}RENAME COLUMN {} TO {}", column(&old), column(c)))]
            };
            out.push(change(format!("column \"{}\" renamed to \"{}\"", old.name, c.name), Step::Confirm(actions)));
            name = c.name.clone();
        }
        let current = on_target(&name).or(on_target(&c.name));
        if old.type_name != c.type_name || old.collation != c.collation {
            let actions = if current.is_some_and(|t| t.type_name == c.type_name && t.collation == c.collation) {
                vec![]
            } else {
                vec![Action::Sql(format!("{a}ALTER COLUMN {} TYPE {}", column(c), typed(c)))]
            };
            let what = format!("column \"{}\" changed type from {} to {}", c.name, old.type_name, c.type_name);
            let step = if old.collation == c.collation && widens(&old, c) {
                Step::Apply(actions)
            } else {
                Step::Confirm(actions)
            };
            out.push(change(what, step));
        }
        if old.generated != c.generated {
            out.push(change(format!("column \"{}\" changed generation", c.name), Step::Confirm(vec![Action::ByHand])));
            continue;
        }
        if old.not_null != c.not_null {
            let done = current.is_some_and(|t| t.not_null == c.not_null);
            let (what, verb) = if c.not_null { ("set", "SET") } else { ("dropped", "DROP") };
            let actions =
                if done { vec![] } else { vec![Action::Sql(format!("{a}ALTER COLUMN {} {verb} NOT NULL", column(c)))] };
            let step = if c.not_null { Step::Confirm(actions) } else { Step::Apply(actions) };
            out.push(change(format!("column \"{}\": NOT NULL {what}", c.name), step));
        }
        if old.default != c.default && !c.generated {
            let done = current.is_some_and(|t| t.default == c.default);
            let actions = if done { vec![] } else { vec![Action::Sql(set_default(&a, c))] };
            out.push(change(format!("column \"{}\": default changed", c.name), Step::Apply(actions)));
        }
    }
    let own = |s: &Shape| -> BTreeMap<String, Index> {
        s.indexes.iter().filter(|(_, i)| !i.inherited).map(|(n, i)| (n.clone(), i.clone())).collect()
    };
    let (old_indexes, new_indexes) = (own(before), own(now));
    let target_index = |name: &str| target.and_then(|t| t.indexes.get(name));
    let drop_index = |name: &str, index: &Index| match &index.constraint {
        Some(constraint) => format!("{a}DROP CONSTRAINT {}", ident::quote(constraint)),
        None => format!("DROP INDEX {}", ident::qualified(&table.0, name)),
    };
    for (name, index) in &old_indexes {
        match new_indexes.get(name) {
            None => {
                let actions = match target_index(name) {
                    Some(there) => vec![Action::Sql(drop_index(name, there))],
                    None => vec![],
                };
                out.push(change(format!("index \"{name}\" dropped"), Step::Confirm(actions)));
            }
            Some(new)
                if new.definition != index.definition || new.constraint_definition != index.constraint_definition =>
            {
                let mut actions = Vec::new();
                if let Some(there) = target_index(name) {
                    if there.definition == new.definition && there.constraint_definition == new.constraint_definition {
                        out.push(change(format!("index \"{name}\" changed"), Step::Confirm(vec![])));
                        continue;
                    }
                    actions.push(Action::Sql(drop_index(name, there)));
                }
                actions.push(Action::Sql(create_index(&a, now, new)));
                out.push(change(format!("index \"{name}\" changed"), Step::Confirm(actions)));
            }
            Some(_) => {}
        }
    }
    for (name, index) in new_indexes.iter().filter(|(n, _)| !old_indexes.contains_key(*n)) {
        let mut actions = Vec::new();
        match target_index(name) {
            Some(there) if there.valid => {}
            // A concurrent build that failed leaves an invalid index behind.
            Some(_) => {
                actions.push(Action::Sql(format!("DROP INDEX {}", ident::qualified(&table.0, name))));
                actions.push(Action::Sql(create_index(&a, now, index)));
            }
            None => actions.push(Action::Sql(create_index(&a, now, index))),
        }
        match &index.constraint {
            Some(constraint) => out.push(change(format!("constraint \"{constraint}\" added"), Step::Confirm(actions))),
            None => out.push(change(format!("index \"{name}\" created"), Step::Apply(actions))),
        }
    }
    out
}

/// `CREATE INDEX CONCURRENTLY …` (a plain table's index, so that the target's apply goes on
/// while it builds) or `ALTER TABLE … ADD CONSTRAINT …` for a constraint's index.
fn create_index(alter: &str, table: &Shape, index: &Index) -> String {
    if let (Some(constraint), Some(definition)) = (&index.constraint, &index.constraint_definition) {
        return format!("{alter}ADD CONSTRAINT {} {definition}", ident::quote(constraint));
    }
    let plain = table.kind.starts_with('r');
    for prefix in ["CREATE INDEX ", "CREATE UNIQUE INDEX "] {
        if plain && let Some(rest) = index.definition.strip_prefix(prefix) {
            return format!("{prefix}CONCURRENTLY {rest}");
        }
    }
    index.definition.clone()
}

fn set_default(alter: &str, c: &Column) -> String {
    match &c.default {
        Some(expression) => format!("{alter}ALTER COLUMN {} SET DEFAULT {expression}", ident::quote(&c.name)),
        None => format!("{alter}ALTER COLUMN {} DROP DEFAULT", ident::quote(&c.name)),
    }
}

/// A column the source added. Rows older than it read its missing value on the source:
/// the target's column gets that value as a constant default, then the source's default
/// once the rows queued before the change arrived. A default the source computed per row
/// (a volatile one) means copying the table again. The default is set last, so a target
/// column with the source's default is one whose rows are right.
fn added_column(key: &str, alter: &str, c: &Column, there: Option<&Column>) -> Change {
    let name = ident::quote(&c.name);
    let what = format!(
        "column \"{}\" added ({}{}{})",
        c.name,
        c.type_name,
        if c.not_null { " not null" } else { "" },
        match (&c.default, c.generated) {
            (Some(_), true) => " generated",
            (Some(_), false) => " with a default",
            _ => "",
        }
    );
    let change = |step| Change::new(key, what.clone(), step);
    if c.generated {
        let expression = c.default.clone().unwrap_or_default();
        let actions = if there.is_some() {
            vec![]
        } else {
            vec![Action::Sql(format!(
                "{alter}ADD COLUMN {name} {} GENERATED ALWAYS AS ({expression}) STORED",
                typed(c)
            ))]
        };
        return change(Step::Confirm(actions));
    }
    let mut actions = Vec::new();
    let settled = there.is_some_and(|t| t.default == c.default);
    match (&c.missing, &c.default) {
        (Some(missing), default) => {
            let constant = format!("{}::{}", ident::literal(missing), c.type_name);
            if there.is_none() {
                actions.push(Action::Sql(format!(
                    "{alter}ADD COLUMN {name} {}{} DEFAULT {constant}",
                    typed(c),
                    if c.not_null { " NOT NULL" } else { "" },
                )));
            }
            // A default that is that constant (`7`, `'x'::text`) is set already.
            let same = default.as_deref().is_some_and(|d| d == missing || d == constant);
            if !(settled || (there.is_none() && same)) {
                actions.push(Action::SqlAfterCatchUp(set_default(alter, c)));
            }
        }
        (None, Some(_)) => {
            if there.is_none() {
                actions.push(Action::Sql(format!("{alter}ADD COLUMN {name} {}", typed(c))));
            }
            if !settled {
                actions.push(Action::Resync);
                actions.push(Action::Sql(set_default(alter, c)));
            }
            if c.not_null && !there.is_some_and(|t| t.not_null) {
                actions.push(Action::Sql(format!("{alter}ALTER COLUMN {name} SET NOT NULL")));
            }
        }
        (None, None) => {
            if there.is_none() {
                actions.push(Action::Sql(format!(
                    "{alter}ADD COLUMN {name} {}{}",
                    typed(c),
                    if c.not_null { " NOT NULL" } else { "" }
                )));
            }
        }
    }
    change(Step::Apply(actions))
}

/// What [`apply_ddl`] did.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct DdlReport {
    /// Changes made on the target (`shop: public.t: column "c" added (text)`).
    pub applied: Vec<String>,
    /// Changes left as they are, with the statements they need.
    pub pending: Vec<String>,
    /// Subscriptions paused for a change barge does not apply unasked.
    pub paused: Vec<String>,
    /// Subscriptions resumed once nothing was pending any more.
    pub resumed: Vec<String>,
}

/// The changes a sync's database has pending: `[]` when the source is as recorded.
pub(super) async fn pending(source: &Db, target: &Db, f: &Found) -> Result<Vec<Change>> {
    Ok(pending_with(source, target, f).await?.0)
}

/// [`pending`], with the source's structure the changes were found in.
async fn pending_with(source: &Db, target: &Db, f: &Found) -> Result<(Vec<Change>, BTreeMap<String, Shape>)> {
    let now = shapes(source).await?;
    let selected = watched_selection(source, f).await?;
    let unchanged = f.baseline.iter().all(|(k, r)| match (r, now.get(k)) {
        (Recorded::Shape(s), Some(n)) => {
            s.oid == n.oid && s.same_structure(n) && s.columns.iter().map(|c| c.num).eq(n.columns.iter().map(|c| c.num))
        }
        (Recorded::Digest(d), Some(n)) => *d == n.digest,
        (_, None) => false,
    }) && selected.iter().all(|k| f.baseline.contains_key(k) || !now.contains_key(k));
    if unchanged {
        return Ok((Vec::new(), now));
    }
    let there = shapes(target).await?;
    let names = table_names(&[source, target]).await?;
    Ok((changes(&f.baseline, &now, &selected, &there, &names), now))
}

/// The tables the sync's filters select that were not taken out of it.
async fn watched_selection(source: &Db, f: &Found) -> Result<HashSet<String>> {
    let selected = selected(source, &f.objects.source_database, &f.filter.compile()?).await?;
    Ok(selected.into_iter().filter(|t| !f.settings.removed.contains(t)).collect())
}

/// `schema.table` → (schema, table) for the tables (plain and partitioned) of `dbs`, which
/// a dot in a name would make ambiguous otherwise.
pub(super) async fn table_names(dbs: &[&Db]) -> Result<BTreeMap<String, (String, String)>> {
    let mut out = BTreeMap::new();
    for db in dbs {
        let rows = db
            .query(
                "list the tables",
                "select n.nspname::text, c.relname::text from pg_catalog.pg_class c
                 join pg_catalog.pg_namespace n on n.oid = c.relnamespace where c.relkind in ('r', 'p')",
                &[],
            )
            .await?;
        for r in rows {
            let (schema, name): (String, String) = (r.get(0), r.get(1));
            out.insert(format!("{schema}.{name}"), (schema, name));
        }
    }
    Ok(out)
}

/// How [`reconcile`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    /// The stream loop: additive changes applied, the sync paused for the others.
    Stream,
    /// `barge sync apply-ddl`: additive changes applied, the others too when `destructive`.
    Apply { destructive: bool },
}

/// Applies the source's schema changes to the target as `mode` allows, records the tables
/// whose changes are all applied, and pauses or resumes the sync.
pub(super) async fn reconcile(req: &Request, f: &Found, mode: Mode, sink: &Arc<dyn ProgressSink>) -> Result<DdlReport> {
    let source = Db::connect(&req.source, &f.objects.source_database).await?;
    let target = Db::connect(&req.target, &f.objects.target_database).await?;
    let mut report = DdlReport::default();
    let (changes, structure) = pending_with(&source, &target, f).await?;
    let db = &f.objects.source_database;
    let allowed = |c: &Change| match mode {
        Mode::Stream => !c.waits_for_confirmation(),
        Mode::Apply { destructive } => destructive || !c.waits_for_confirmation(),
    };
    let held = changes.iter().any(|c| !allowed(c));
    // Also in the stream loop: an `apply-ddl` may have resolved the changes while the loop
    // was pausing the sync for them.
    if !held {
        resume_for_ddl(req, f, &mut report).await?;
    }
    let enabled = subscription_enabled(&target, f).await?;
    // A table is applied as a whole, or not at all: its changes depend on one another.
    let mut by_table: BTreeMap<&str, Vec<&Change>> = BTreeMap::new();
    for c in &changes {
        by_table.entry(&c.table).or_default().push(c);
    }
    // Statements first: the target's apply may be stuck on a row that needs one of them,
    // and a copy or a wait for the apply would wait for ever.
    let mut order: Vec<(&str, Vec<&Change>)> = by_table.into_iter().collect();
    order.sort_by_key(|(_, cs)| cs.iter().any(|c| c.needs_streaming()));
    let mut done: Vec<&str> = Vec::new();
    let mut failed: Option<Error> = None;
    for (table, cs) in &order {
        let waits = !cs.iter().all(|c| allowed(c))
            // Copying, adding and waiting for the target need it to stream; the stream loop
            // is about to pause it.
            || (!enabled || (held && mode == Mode::Stream)) && cs.iter().any(|c| c.needs_streaming());
        if waits {
            report.pending.extend(cs.iter().map(|c| format!("{db}: {}", c.describe())));
            continue;
        }
        // The stream loop does not wait for copies: status shows them until they are ready.
        let wait = mode != Mode::Stream;
        // A change that waits may hold up the target's apply: waits for it are short then.
        let run = Run { req, f, enabled, wait: wait && !held };
        match apply_table(&run, &source, &target, table, cs, sink).await {
            Ok(()) => {
                for c in cs {
                    let message = format!("{db}: {}: {}", c.table, c.what);
                    sink.emit(Event::Warning { message: format!("schema change applied on the target: {message}") });
                    report.applied.push(message);
                }
                done.push(table);
            }
            Err(e) => {
                report.pending.extend(cs.iter().map(|c| format!("{db}: {}", c.describe())));
                failed.get_or_insert(e);
            }
        }
    }
    record(req, f, &structure, &done, &changes).await?;
    if mode == Mode::Stream && held && !f.settings.ddl_paused {
        if pause_one(req, f).await? {
            report.paused.push(f.objects.name.clone());
        }
        // `record` may have just written the record: this writes on top of it.
        set_ddl_paused(req, &refind(req, f).await?, true).await?;
        sink.emit(Event::Warning {
            message: format!(
                "the sync is paused: the source's schema changed in a way barge does not apply unasked: {}",
                report.pending.join("; ")
            ),
        });
    }
    match failed {
        Some(e) if mode != Mode::Stream => Err(e),
        Some(e) => {
            sink.emit(Event::Warning { message: format!("a schema change could not be applied yet: {e}") });
            Ok(report)
        }
        None => Ok(report),
    }
}

/// Resumes a sync paused for a schema change (and only such a sync: one the user paused
/// stays paused).
async fn resume_for_ddl(req: &Request, f: &Found, report: &mut DdlReport) -> Result<()> {
    let fresh = refind(req, f).await?;
    if fresh.settings.ddl_paused {
        if set_enabled(req, &fresh, true).await? {
            report.resumed.push(f.objects.name.clone());
        }
        set_ddl_paused(req, &fresh, false).await?;
    }
    Ok(())
}

/// The record of `f` as it is now (`add` and `resync` write it meanwhile).
async fn refind(req: &Request, f: &Found) -> Result<Found> {
    find(req)
        .await?
        .into_iter()
        .find(|x| x.objects.name == f.objects.name)
        .ok_or_else(|| Error::NotFound(format!("the sync {} is gone from the target", f.objects.name)))
}

/// Records whether barge paused the sync for a schema change, in the record as `fresh`
/// (just read) holds it.
async fn set_ddl_paused(req: &Request, fresh: &Found, paused: bool) -> Result<()> {
    let settings = Settings { ddl_paused: paused, ..fresh.settings.clone() };
    let target = Db::connect(&req.target, &fresh.objects.target_database).await?;
    update_record(&target, &fresh.objects.name, &fresh.baseline, &settings).await
}

/// What [`apply_table`] runs in: the sync, whether its subscription is enabled, and
/// whether copies are waited for.
#[derive(Clone, Copy)]
struct Run<'a> {
    req: &'a Request,
    f: &'a Found,
    enabled: bool,
    wait: bool,
}

/// Runs one table's changes in order.
async fn apply_table(
    run: &Run<'_>,
    source: &Db,
    target: &Db,
    table: &str,
    changes: &[&Change],
    sink: &Arc<dyn ProgressSink>,
) -> Result<()> {
    let Run { req, f, enabled, wait } = *run;
    let pattern = {
        let (schema, name) = table.split_once('.').unwrap_or(("public", table));
        // Quoted parts are literal in a pattern (docs/sync.md).
        let names = table_names(&[source]).await?;
        let (schema, name) = names.get(table).cloned().unwrap_or((schema.to_owned(), name.to_owned()));
        format!("{}.{}", ident::quote(&schema), ident::quote(&name))
    };
    for change in changes {
        for action in change.actions() {
            match action {
                Action::Sql(sql) => {
                    target.execute(&format!("apply a schema change to {table}"), sql, &[]).await?;
                }
                Action::SqlAfterCatchUp(sql) => {
                    let limit = if wait { std::time::Duration::from_secs(300) } else { DDL_CATCH_UP };
                    caught_up_within(req, f, source, limit).await?;
                    target.execute(&format!("apply a schema change to {table}"), sql, &[]).await?;
                }
                Action::Resync => {
                    let fresh = refind(req, f).await?;
                    resync_one(req, &fresh, std::slice::from_ref(&pattern), sink.clone(), wait).await?;
                }
                Action::Add => {
                    add_one(req, &refind(req, f).await?, std::slice::from_ref(&pattern), sink.clone(), wait).await?;
                }
                // A disabled subscription cannot be refreshed; the next add or remove does it.
                Action::Forget if enabled => refresh(target, f, false).await?,
                Action::Forget | Action::ByHand => {}
            }
        }
    }
    Ok(())
}

/// Records the source's structure the changes were found in (`now`) for the tables in
/// `done`: their changes are on the target. (Not the structure as it is by now: a change
/// made meanwhile is not on the target yet.) A table dropped (or renamed away) leaves the
/// record.
async fn record(
    req: &Request,
    f: &Found,
    now: &BTreeMap<String, Shape>,
    done: &[&str],
    changes: &[Change],
) -> Result<()> {
    if done.is_empty() {
        return Ok(());
    }
    let fresh = refind(req, f).await?;
    let mut baseline = fresh.baseline.clone();
    for table in done {
        match now.get(*table) {
            Some(shape) => {
                baseline.insert((*table).to_owned(), Recorded::Shape(shape.clone()));
            }
            None => {
                baseline.remove(*table);
            }
        }
        // A rename's new name takes the old one's place.
        for c in changes.iter().filter(|c| c.table == *table) {
            if let Some(new) = &c.renamed_to
                && let Some(shape) = now.get(new)
            {
                baseline.insert(new.clone(), Recorded::Shape(shape.clone()));
            }
        }
    }
    let target = Db::connect(&req.target, &f.objects.target_database).await?;
    update_record(&target, &f.objects.name, &baseline, &fresh.settings).await
}

/// Applies the source's schema changes to the target (`barge sync apply-ddl`): those that
/// add or widen, and with `destructive` the others too; a sync paused for them resumes once
/// none is left.
pub async fn apply_ddl(req: &Request, destructive: bool, sink: Arc<dyn ProgressSink>) -> Result<DdlReport> {
    let found = find(req).await?;
    let mut report = DdlReport::default();
    for f in &found {
        let one = reconcile(req, f, Mode::Apply { destructive }, &sink).await?;
        report.applied.extend(one.applied);
        report.pending.extend(one.pending);
        report.paused.extend(one.paused);
        report.resumed.extend(one.resumed);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(num: i16, name: &str, ty: &str, oid: i64, typmod: i32) -> Column {
        Column {
            num,
            name: name.into(),
            type_name: ty.into(),
            type_oid: oid,
            typmod,
            not_null: false,
            generated: false,
            collation: None,
            default: None,
            missing: None,
        }
    }

    fn shape(oid: i64, columns: Vec<Column>) -> Shape {
        Shape { oid, kind: "rpd".into(), replica_index: None, digest: "d".into(), columns, indexes: BTreeMap::new() }
    }

    fn names() -> BTreeMap<String, (String, String)> {
        [("public.t", ("public", "t")), ("public.u", ("public", "u")), ("app.t", ("app", "t"))]
            .into_iter()
            .map(|(k, (s, t))| (k.to_owned(), (s.to_owned(), t.to_owned())))
            .collect()
    }

    fn diff(before: Shape, now: Shape, target: Shape) -> Vec<Change> {
        let baseline = [("public.t".to_owned(), Recorded::Shape(before))].into();
        let source = [("public.t".to_owned(), now)].into();
        let target = [("public.t".to_owned(), target)].into();
        changes(&baseline, &source, &HashSet::new(), &target, &names())
    }

    #[test]
    fn widening_types_only() {
        let c = |oid, typmod| col(1, "c", "x", oid, typmod);
        assert!(widens(&c(INT4, -1), &c(INT8, -1)));
        assert!(widens(&c(INT2, -1), &c(INT4, -1)));
        assert!(!widens(&c(INT8, -1), &c(INT4, -1)));
        assert!(widens(&c(VARCHAR, 24), &c(VARCHAR, 104)));
        assert!(!widens(&c(VARCHAR, 104), &c(VARCHAR, 24)));
        assert!(widens(&c(VARCHAR, 24), &c(TEXT, -1)));
        assert!(!widens(&c(TEXT, -1), &c(VARCHAR, 24)));
        let numeric = |p: i32, s: i32| c(NUMERIC, ((p << 16) | s) + 4);
        assert!(widens(&numeric(10, 2), &numeric(12, 2)));
        assert!(widens(&numeric(10, 2), &numeric(12, 4)));
        assert!(!widens(&numeric(10, 2), &numeric(10, 4)));
        assert!(!widens(&numeric(10, 2), &numeric(8, 2)));
        assert!(widens(&numeric(10, 2), &c(NUMERIC, -1)));
        assert!(!widens(&c(NUMERIC, -1), &numeric(10, 2)));
        assert!(!widens(&c(INT8, -1), &numeric(30, 0)));
    }

    #[test]
    fn additive_changes_are_applied_and_others_wait_with_their_statement() {
        let a = col(1, "a", "integer", INT4, -1);
        let before = shape(7, vec![a.clone()]);
        // A column added with a constant default: the old rows' value first, the default last.
        let mut added = col(2, "n", "text", TEXT, -1);
        added.default = Some("'x'::text".into());
        added.missing = Some("it's".into());
        let now = shape(7, vec![a.clone(), added]);
        let got = diff(before.clone(), now.clone(), before.clone());
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(
            got[0].step,
            Step::Apply(vec![
                Action::Sql(r#"ALTER TABLE "public"."t" ADD COLUMN "n" text DEFAULT 'it''s'::text"#.into()),
                Action::SqlAfterCatchUp(r#"ALTER TABLE "public"."t" ALTER COLUMN "n" SET DEFAULT 'x'::text"#.into()),
            ])
        );
        // Once on the target, nothing is left to do.
        assert_eq!(diff(before.clone(), now.clone(), now.clone())[0].step, Step::Apply(vec![]));
        // Renamed: the statement, never run unasked.
        let renamed = shape(7, vec![col(1, "b\"x", "integer", INT4, -1)]);
        let got = diff(before.clone(), renamed, before.clone());
        assert_eq!(
            got[0].step,
            Step::Confirm(vec![Action::Sql(r#"ALTER TABLE "public"."t" RENAME COLUMN "a" TO "b""x""#.into())])
        );
        assert!(got[0].describe().contains(r#"RENAME COLUMN "a" TO "b""x";"#), "{}", got[0].describe());
        // Widened: applied; narrowed: waits.
        let wide = shape(7, vec![col(1, "a", "bigint", INT8, -1)]);
        assert!(matches!(diff(before.clone(), wide.clone(), before.clone())[0].step, Step::Apply(_)));
        assert!(matches!(diff(wide.clone(), before.clone(), wide.clone())[0].step, Step::Confirm(_)));
        // Dropped: the statement while the target has it.
        let got = diff(before.clone(), shape(7, vec![]), before.clone());
        assert_eq!(got[0].step, Step::Confirm(vec![Action::Sql(r#"ALTER TABLE "public"."t" DROP COLUMN "a""#.into())]));
        // Dropped and added again: both, waiting for the user.
        let readded = shape(7, vec![col(2, "a", "integer", INT4, -1)]);
        let got = diff(before.clone(), readded, before.clone());
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(
            got[0].step,
            Step::Confirm(vec![
                Action::Sql(r#"ALTER TABLE "public"."t" DROP COLUMN "a""#.into()),
                Action::Sql(r#"ALTER TABLE "public"."t" ADD COLUMN "a" integer"#.into()),
            ])
        );
        // A volatile default: copied again, the default set after.
        let mut stamped = col(2, "at", "timestamp with time zone", 1184, -1);
        stamped.default = Some("clock_timestamp()".into());
        stamped.not_null = true;
        let got = diff(before.clone(), shape(7, vec![a.clone(), stamped]), before.clone());
        let Step::Apply(actions) = &got[0].step else { panic!("{got:?}") };
        assert_eq!(actions[1], Action::Resync);
        assert!(actions[3].statement().unwrap().ends_with("SET NOT NULL"));
    }

    #[test]
    fn tables_created_dropped_renamed_and_recreated() {
        let before = shape(7, vec![col(1, "a", "integer", INT4, -1)]);
        let baseline: BTreeMap<String, Recorded> = [("public.t".to_owned(), Recorded::Shape(before.clone()))].into();
        let selected: HashSet<String> = ["public.t".to_owned(), "public.u".to_owned()].into();
        // Renamed to another schema (same OID).
        let source = [("app.t".to_owned(), before.clone())].into();
        let target = [("public.t".to_owned(), before.clone())].into();
        let got = changes(&baseline, &source, &selected, &target, &names());
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].what, "renamed to app.t");
        assert_eq!(
            got[0].step,
            Step::Confirm(vec![Action::Sql(r#"ALTER TABLE "public"."t" SET SCHEMA "app""#.into())])
        );
        // Dropped, and another table created.
        let source = [("public.u".to_owned(), shape(9, vec![]))].into();
        let got = changes(&baseline, &source, &selected, &target, &names());
        assert_eq!(got[0].step, Step::Confirm(vec![Action::Forget]));
        assert_eq!(got[1].step, Step::Apply(vec![Action::Add]));
        // Created again with the same structure: copied again.
        let source = [("public.t".to_owned(), shape(8, before.columns.clone()))].into();
        let got = changes(&baseline, &source, &selected, &target, &names());
        assert_eq!(got[0].step, Step::Apply(vec![Action::Resync]));
        // An earlier barge's digest: named without columns when it differs.
        let old: BTreeMap<String, Recorded> = [("public.t".to_owned(), Recorded::Digest("d".into()))].into();
        let source: BTreeMap<String, Shape> = [("public.t".to_owned(), before.clone())].into();
        assert!(changes(&old, &source, &selected, &target, &names()).is_empty());
        let old: BTreeMap<String, Recorded> = [("public.t".to_owned(), Recorded::Digest("other".into()))].into();
        assert!(changes(&old, &source, &selected, &target, &names())[0].waits_for_confirmation());
        // The record reads both forms back.
        let json = serde_json::to_string(&baseline).unwrap();
        assert_eq!(serde_json::from_str::<BTreeMap<String, Recorded>>(&json).unwrap(), baseline);
        let legacy: BTreeMap<String, Recorded> = serde_json::from_str(r#"{"public.t":"abc"}"#).unwrap();
        assert_eq!(legacy["public.t"], Recorded::Digest("abc".into()));
    }

    #[test]
    fn indexes_are_built_concurrently_and_constraints_wait() {
        let before = shape(7, vec![col(1, "a", "integer", INT4, -1)]);
        let mut now = before.clone();
        now.indexes.insert(
            "t_a".into(),
            Index {
                definition: "CREATE INDEX t_a ON public.t USING btree (a)".into(),
                constraint: None,
                constraint_definition: None,
                valid: true,
                inherited: false,
            },
        );
        now.indexes.insert(
            "t_pkey".into(),
            Index {
                definition: "CREATE UNIQUE INDEX t_pkey ON public.t USING btree (a)".into(),
                constraint: Some("t_pkey".into()),
                constraint_definition: Some("PRIMARY KEY (a)".into()),
                valid: true,
                inherited: false,
            },
        );
        let got = diff(before.clone(), now.clone(), before.clone());
        assert_eq!(
            got[0].step,
            Step::Apply(vec![Action::Sql("CREATE INDEX CONCURRENTLY t_a ON public.t USING btree (a)".into())])
        );
        assert_eq!(
            got[1].step,
            Step::Confirm(vec![Action::Sql(
                r#"ALTER TABLE "public"."t" ADD CONSTRAINT "t_pkey" PRIMARY KEY (a)"#.into()
            )])
        );
        let dropped = diff(now.clone(), before.clone(), now.clone());
        assert!(dropped.iter().all(|c| c.waits_for_confirmation()), "{dropped:?}");
        assert!(dropped.iter().any(|c| c.describe().contains(r#"DROP INDEX "public"."t_a";"#)), "{dropped:?}");
    }
}
