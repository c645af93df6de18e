//! Catalog reads, one query per file under `sql/`, into plain structs.

use std::collections::{HashMap, HashSet};

use crate::{db::Db, error::Result};

/// A user relation of one database.
#[derive(Clone, Debug)]
pub(crate) struct Relation {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    /// pg_class.relkind: r, p, m, v, f, S.
    pub kind: char,
    /// pg_class.relpersistence: p, u.
    pub persistence: char,
    pub parent: Option<u32>,
    /// Heap and TOAST main forks: about what COPY moves.
    pub bytes: u64,
    pub heap_bytes: u64,
    pub est_rows: u64,
    /// Whether `est_rows` comes from a VACUUM or ANALYZE (else it is 0 for want of one).
    pub counted: bool,
    /// A row's size on disk estimated from its column types.
    pub row_width: u64,
    pub columns: Vec<String>,
    pub int_key: Option<String>,
    pub owned_by: Option<u32>,
    pub own_autovacuum: bool,
    /// Whether the table has extended statistics (`CREATE STATISTICS`).
    pub extended_statistics: bool,
}

/// A user relation, named: what the copy needs to match catalog objects to pg_dump's
/// entries.
#[derive(Clone, Debug)]
pub(crate) struct RelationName {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    /// pg_class.relkind: r, p, m, v, f, S.
    pub kind: char,
    /// For a sequence, the table owning it (identity or `OWNED BY`).
    pub owned_by: Option<u32>,
    /// The tables it inherits from or is a partition of.
    pub parents: Vec<u32>,
}

/// An index barge builds itself, with its constraint if it backs one.
#[derive(Clone, Debug)]
pub(crate) struct Index {
    /// The index's pg_class OID.
    pub oid: u32,
    pub schema: String,
    pub name: String,
    pub table_name: String,
    pub indexdef: String,
    pub contype: Option<char>,
    /// The constraint's pg_constraint OID, when the index backs one.
    pub con_oid: Option<u32>,
    pub conname: Option<String>,
    pub condef: Option<String>,
    pub deferrable: bool,
    pub deferred: bool,
}

/// Where a sequence stands: the next `nextval` returns `value` when `called` is false, the
/// value after it (by its increment) when true.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SequencePosition {
    pub schema: String,
    pub name: String,
    /// None when the user may not read the sequence.
    pub position: Option<(i64, bool)>,
}

/// A foreign key declared on an ordinary table.
#[derive(Clone, Debug)]
pub(crate) struct ForeignKey {
    /// The constraint's pg_constraint OID.
    pub oid: u32,
    pub table_oid: u32,
    pub schema: String,
    pub table_name: String,
    pub name: String,
    pub ref_oid: u32,
    pub def: String,
    pub validated: bool,
}

/// What a target database already holds.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Contents {
    /// Tables (ordinary and partitioned).
    pub tables: i64,
    /// Views, materialized views, sequences, foreign tables.
    pub other_relations: i64,
    /// Up to three table names.
    pub sample: Vec<String>,
    /// Schemas other than public.
    pub schemas: i64,
    /// Functions and procedures.
    pub functions: i64,
    /// Large objects.
    pub large_objects: i64,
    /// Extensions other than plpgsql (they do not make a database non-empty).
    pub extensions: i64,
    /// Database size.
    pub bytes: i64,
    /// Whether an interrupted barge copy left its marks.
    pub interrupted: bool,
}

impl Contents {
    /// Whether the database holds anything barge could overwrite.
    pub fn is_empty(&self) -> bool {
        self.tables + self.other_relations + self.schemas + self.functions + self.large_objects == 0
    }

    /// "12 tables (a.b, …), 3 schemas, 2 functions".
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.tables > 0 {
            let more = if self.tables as usize > self.sample.len() { ", …" } else { "" };
            parts.push(format!("{} table(s) ({}{more})", self.tables, self.sample.join(", ")));
        }
        for (n, what) in [
            (self.other_relations, "view(s)/sequence(s)"),
            (self.schemas, "schema(s) besides public"),
            (self.functions, "function(s)"),
            (self.large_objects, "large object(s)"),
        ] {
            if n > 0 {
                parts.push(format!("{n} {what}"));
            }
        }
        if self.interrupted {
            parts.push("the progress marks of an interrupted barge copy".into());
        }
        parts.join(", ")
    }
}

fn oid(v: i64) -> u32 {
    u32::try_from(v).unwrap_or_default()
}

/// `sql` with sql/user_relations.sql in place of its `{user_relations}`.
fn user_relations(sql: &str) -> String {
    sql.replace("{user_relations}", include_str!("sql/user_relations.sql"))
}

pub(crate) async fn relations(db: &Db) -> Result<Vec<Relation>> {
    let rows = db.query("list relations", &user_relations(include_str!("sql/relations.sql")), &[]).await?;
    Ok(rows
        .iter()
        .map(|r| Relation {
            oid: oid(r.get("oid")),
            schema: r.get("schema"),
            name: r.get("name"),
            kind: r.get::<_, String>("kind").chars().next().unwrap_or('r'),
            persistence: r.get::<_, String>("persistence").chars().next().unwrap_or('p'),
            parent: r.get::<_, Option<i64>>("parent").map(oid),
            bytes: r.get::<_, i64>("bytes").max(0) as u64,
            heap_bytes: r.get::<_, i64>("heap_bytes").max(0) as u64,
            est_rows: r.get::<_, f64>("est_rows") as u64,
            counted: r.get("counted"),
            row_width: r.get::<_, i64>("row_width").max(1) as u64,
            columns: r.get("columns"),
            int_key: r.get("int_key"),
            owned_by: r.get::<_, Option<i64>>("owned_by").map(oid),
            own_autovacuum: r.get("own_autovacuum"),
            extended_statistics: r.get("extended_statistics"),
        })
        .collect())
}

/// The user relations of [`relations`], with no more than their names and kinds: cheap
/// however many there are.
pub(crate) async fn relation_names(db: &Db) -> Result<Vec<RelationName>> {
    let rows = db.query("list relations", &user_relations(include_str!("sql/relation_names.sql")), &[]).await?;
    Ok(rows
        .iter()
        .map(|r| RelationName {
            oid: oid(r.get("oid")),
            schema: r.get("schema"),
            name: r.get("name"),
            kind: r.get::<_, String>("kind").chars().next().unwrap_or('r'),
            owned_by: r.get::<_, Option<i64>>("owned_by").map(oid),
            parents: r.get::<_, Vec<i64>>("parents").into_iter().map(oid).collect(),
        })
        .collect())
}

/// Counts the rows of `tables` (OID and quoted name), a few hundred tables per query. A
/// query that fails (a table the user may not read) leaves its tables out of the answer.
pub(crate) async fn count_rows(db: &Db, tables: &[(u32, String)]) -> HashMap<u32, u64> {
    let mut counts = HashMap::new();
    for chunk in tables.chunks(200) {
        let sql = chunk
            .iter()
            .map(|(oid, name)| format!("select {oid}::int8, count(*) from only {name}"))
            .collect::<Vec<_>>()
            .join(" union all ");
        if let Ok(rows) = db.query("count the rows of tables never analyzed", &sql, &[]).await {
            counts.extend(rows.iter().map(|r| (oid(r.get(0)), r.get::<_, i64>(1).max(0) as u64)));
        }
    }
    counts
}

pub(crate) async fn schemas(db: &Db) -> Result<Vec<String>> {
    let rows = db.query("list schemas", include_str!("sql/schemas.sql"), &[]).await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

pub(crate) async fn text_copy_tables(db: &Db) -> Result<HashSet<u32>> {
    let rows = db.query("find columns that need text COPY", include_str!("sql/text_copy.sql"), &[]).await?;
    Ok(rows.iter().map(|r| oid(r.get(0))).collect())
}

pub(crate) async fn indexes(db: &Db) -> Result<Vec<Index>> {
    let rows = db.query("list indexes", include_str!("sql/indexes.sql"), &[]).await?;
    Ok(rows
        .iter()
        .map(|r| Index {
            oid: oid(r.get("index_oid")),
            schema: r.get("schema"),
            name: r.get("index_name"),
            table_name: r.get("table_name"),
            indexdef: r.get("indexdef"),
            contype: r.get::<_, Option<String>>("contype").and_then(|c| c.chars().next()),
            con_oid: r.get::<_, Option<i64>>("con_oid").map(oid),
            conname: r.get("conname"),
            condef: r.get("condef"),
            deferrable: r.get("deferrable"),
            deferred: r.get("deferred"),
        })
        .collect())
}

/// The table OID of each index [`indexes`] lists: enough to count them, without reading
/// their definitions.
pub(crate) async fn index_tables(db: &Db) -> Result<Vec<u32>> {
    let rows = db.query("count indexes", include_str!("sql/index_tables.sql"), &[]).await?;
    Ok(rows.iter().map(|r| oid(r.get(0))).collect())
}

pub(crate) async fn foreign_keys(db: &Db) -> Result<Vec<ForeignKey>> {
    let rows = db.query("list foreign keys", include_str!("sql/foreign_keys.sql"), &[]).await?;
    Ok(rows
        .iter()
        .map(|r| ForeignKey {
            oid: oid(r.get("oid")),
            table_oid: oid(r.get("table_oid")),
            schema: r.get("schema"),
            table_name: r.get("table_name"),
            name: r.get("name"),
            ref_oid: oid(r.get("ref_oid")),
            def: r.get("def"),
            validated: r.get("validated"),
        })
        .collect())
}

pub(crate) async fn view_deps(db: &Db) -> Result<Vec<(u32, u32)>> {
    let rows = db.query("list view dependencies", include_str!("sql/view_deps.sql"), &[]).await?;
    Ok(rows.iter().map(|r| (oid(r.get(0)), oid(r.get(1)))).collect())
}

pub(crate) async fn contents(db: &Db) -> Result<Contents> {
    let r = db.query_one("inspect the target database", include_str!("sql/target_contents.sql"), &[]).await?;
    Ok(Contents {
        tables: r.get("tables"),
        other_relations: r.get("other_relations"),
        sample: r.get::<_, Option<Vec<String>>>("sample").unwrap_or_default(),
        schemas: r.get("schemas"),
        functions: r.get("functions"),
        large_objects: r.get("large_objects"),
        extensions: r.get("extensions"),
        bytes: r.get("bytes"),
        interrupted: r.get("interrupted"),
    })
}

pub(crate) async fn owners(db: &Db) -> Result<Vec<String>> {
    let rows = db.query("list object owners", include_str!("sql/owners.sql"), &[]).await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// OIDs of the large objects, in order.
pub(crate) async fn large_object_oids(db: &Db) -> Result<Vec<u32>> {
    let rows =
        db.query("list large objects", "select oid from pg_catalog.pg_largeobject_metadata order by oid", &[]).await?;
    Ok(rows.iter().map(|r| r.get::<_, u32>(0)).collect())
}

/// Names of the roles that exist on a server.
pub(crate) async fn role_names(db: &Db) -> Result<HashSet<String>> {
    let rows = db.query("list roles", "select rolname::text from pg_catalog.pg_roles", &[]).await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Extensions installed in the current database (name, version).
pub(crate) async fn extensions(db: &Db) -> Result<Vec<(String, String)>> {
    let rows = db
        .query("list extensions", "select extname::text, extversion from pg_catalog.pg_extension order by 1", &[])
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Extensions a server can install (name → default version).
pub(crate) async fn available_extensions(db: &Db) -> Result<HashSet<String>> {
    let rows =
        db.query("list available extensions", "select name::text from pg_catalog.pg_available_extensions", &[]).await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Every sequence, with whether the user may read it.
pub(crate) async fn sequences(db: &Db) -> Result<Vec<(String, String, bool)>> {
    let rows = db.query("list sequences", include_str!("sql/sequences.sql"), &[]).await?;
    Ok(rows.iter().map(|r| (r.get("schema"), r.get("name"), r.get("readable"))).collect())
}

/// Every sequence's `last_value` and `is_called`, read from the sequences themselves (in
/// queries of up to 500 sequences each).
/// Every sequence's position, read 500 per query. With `snapshot`, each query runs in its
/// own transaction of that exported snapshot: reading a sequence locks it until the
/// transaction ends, and one transaction must not hold thousands.
pub(crate) async fn sequence_positions(db: &Db, snapshot: Option<&str>) -> Result<Vec<SequencePosition>> {
    let mut out = Vec::new();
    let mut readable = Vec::new();
    for (schema, name, may_read) in sequences(db).await? {
        if may_read {
            readable.push(out.len());
        }
        out.push(SequencePosition { schema, name, position: None });
    }
    for chunk in readable.chunks(500) {
        let sql = chunk
            .iter()
            .map(|&i| {
                format!(
                    "select {i}::int8, last_value, is_called from {}",
                    crate::ident::qualified(&out[i].schema, &out[i].name)
                )
            })
            .collect::<Vec<_>>()
            .join(" union all ");
        if let Some(id) = snapshot {
            db.enter_snapshot(id).await?;
        }
        for row in db.query("read sequence positions", &sql, &[]).await? {
            let i = row.get::<_, i64>(0) as usize;
            out[i].position = Some((row.get(1), row.get(2)));
        }
        if snapshot.is_some() {
            db.batch("leave the snapshot", "commit").await?;
        }
    }
    Ok(out)
}
