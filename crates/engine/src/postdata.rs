//! Post-data, split in two. What barge schedules itself, per table, the moment the table is
//! ready: index builds (primary keys and unique constraints as `CREATE UNIQUE INDEX`, attached
//! afterwards with `ADD CONSTRAINT … USING INDEX`; exclusion constraints), and foreign keys
//! between copied tables (added `NOT VALID`, then validated). And the rest, run afterwards in
//! pg_dump's order: triggers, rules, policies, partition index attachments, materialized view
//! refreshes, comments, and the foreign keys barge cannot schedule early.

use std::collections::{HashMap, HashSet};

use crate::{
    catalog::{self, RelationName},
    db::Db,
    error::Result,
    ident,
    plan::DatabasePlan,
    toc::{Kind, TocEntry},
};

/// A statement that commits with its progress mark.
#[derive(Clone, Debug)]
pub(crate) struct Step {
    /// Index or constraint name, for progress.
    pub name: String,
    pub sql: String,
    /// Its progress mark.
    pub step: String,
}

/// A table's index work: builds, then the key constraints attached to built indexes.
#[derive(Clone, Debug, Default)]
pub(crate) struct TableWork {
    pub builds: Vec<Step>,
    pub attach: Vec<Step>,
}

/// A foreign key between two copied tables.
#[derive(Clone, Debug)]
pub(crate) struct ForeignKey {
    /// Plan table index of the referencing table.
    pub child: usize,
    /// Plan table index of the referenced table.
    pub parent: usize,
    /// `ADD CONSTRAINT … NOT VALID`.
    pub add: Step,
    /// `VALIDATE CONSTRAINT`.
    pub validate: Step,
    /// `ADD CONSTRAINT`, checked as it is added: for a small referencing table, one step
    /// where the two would cost more (marked as the validation).
    pub add_valid: String,
}

/// What runs after the copy, in pg_dump's order.
#[derive(Clone, Debug)]
pub(crate) enum Rest<'a> {
    /// An archive entry, rendered by pg_restore.
    Entry(&'a TocEntry),
    /// A late foreign key, added `NOT VALID` where pg_dump would have added it.
    Step(Step),
}

/// Post-data, classified.
pub(crate) struct PostData<'a> {
    /// Per plan table.
    pub tables: Vec<TableWork>,
    /// Foreign keys scheduled with the tables.
    pub foreign_keys: Vec<ForeignKey>,
    /// What runs afterwards, in order.
    pub rest: Vec<Rest<'a>>,
    /// Validations of the late foreign keys, run after the rest.
    pub late_validations: Vec<Step>,
}

fn fk_steps(schema: &str, table: &str, name: &str, def: &str) -> (Step, Step) {
    let qualified = ident::qualified(schema, table);
    let label = format!("{schema}.{table}.{name}");
    let add = Step {
        name: name.to_owned(),
        sql: format!("alter table only {qualified} add constraint {} {def} not valid;", ident::quote(name)),
        step: format!("fk:{label}"),
    };
    let validate = Step {
        name: name.to_owned(),
        sql: format!("alter table {qualified} validate constraint {}", ident::quote(name)),
        step: format!("validate:{label}"),
    };
    (add, validate)
}

/// Splits `post` using the source catalog, read in the copy's snapshot (`relations` by
/// OID): entries are matched to catalog objects by kind and OID, never by name.
pub(crate) async fn classify<'a>(
    source: &Db,
    plan: &DatabasePlan,
    post: &'a [TocEntry],
    relations: &HashMap<u32, RelationName>,
    schema_only_matviews: &HashSet<u32>,
) -> Result<PostData<'a>> {
    let table_index: HashMap<(&str, &str), usize> =
        plan.tables.iter().enumerate().map(|(i, t)| ((t.schema.as_str(), t.name.as_str()), i)).collect();
    let entries: HashMap<(Kind, u32), &TocEntry> = post.iter().map(|e| ((e.kind, e.oid), e)).collect();
    // Dump ids barge runs itself.
    let mut taken: HashSet<u32> = HashSet::new();
    let mut tables = vec![TableWork::default(); plan.tables.len()];
    for index in catalog::indexes(source).await? {
        let Some(&t) = table_index.get(&(index.schema.as_str(), index.table_name.as_str())) else { continue };
        let table = &plan.tables[t];
        match (index.contype, &index.conname) {
            (None, _) => {
                let Some(entry) = entries.get(&(Kind::Index, index.oid)) else { continue };
                taken.insert(entry.id);
                tables[t].builds.push(Step {
                    name: index.name.clone(),
                    step: format!("index:{}.{}", index.schema, index.name),
                    sql: index.indexdef.clone(),
                });
            }
            (Some(kind), Some(conname)) => {
                let Some(entry) = index.con_oid.and_then(|oid| entries.get(&(Kind::Constraint, oid))) else {
                    continue;
                };
                taken.insert(entry.id);
                let step = format!("constraint:{}.{}.{}", index.schema, index.table_name, conname);
                if kind == 'x' {
                    let condef = index.condef.clone().unwrap_or_default();
                    tables[t].builds.push(Step {
                        name: conname.clone(),
                        step,
                        sql: format!(
                            "alter table only {} add constraint {} {condef}",
                            table.qualified(),
                            ident::quote(conname)
                        ),
                    });
                    continue;
                }
                // A plain ADD PRIMARY KEY would hold an exclusive lock on the table while it
                // builds, blocking the table's other index builds; the index is built like any
                // other and attached afterwards.
                tables[t].builds.push(Step {
                    name: conname.clone(),
                    step: format!("index:{}.{}", index.schema, index.name),
                    sql: index.indexdef.clone(),
                });
                let deferral = match (index.deferrable, index.deferred) {
                    (false, _) => "",
                    (true, false) => " deferrable initially immediate",
                    (true, true) => " deferrable initially deferred",
                };
                tables[t].attach.push(Step {
                    name: conname.clone(),
                    step,
                    sql: format!(
                        "alter table only {} add constraint {} {} using index {}{deferral}",
                        table.qualified(),
                        ident::quote(conname),
                        if kind == 'p' { "primary key" } else { "unique" },
                        ident::quote(&index.name)
                    ),
                });
            }
            _ => {}
        }
    }
    let excluded: HashSet<(&str, &str)> =
        plan.excluded_relations.iter().map(|(s, n)| (s.as_str(), n.as_str())).collect();
    let excluded_schemas: HashSet<&str> = plan.excluded_schemas.iter().map(String::as_str).collect();
    // FK entry's dump id → None (left out) or the step that adds it NOT VALID.
    let mut late: HashMap<u32, Option<Step>> = HashMap::new();
    let mut foreign_keys = Vec::new();
    let mut late_validations = Vec::new();
    for fk in catalog::foreign_keys(source).await? {
        let (Some(child), Some(parent)) = (relations.get(&fk.table_oid), relations.get(&fk.ref_oid)) else {
            continue;
        };
        let Some(entry) = entries.get(&(Kind::ForeignKey, fk.oid)) else { continue };
        if excluded.contains(&(parent.schema.as_str(), parent.name.as_str()))
            || excluded_schemas.contains(parent.schema.as_str())
        {
            late.insert(entry.id, None);
            continue;
        }
        if child.kind != 'r' || !fk.validated {
            continue;
        }
        let (add, validate) = fk_steps(&fk.schema, &fk.table_name, &fk.name, &fk.def);
        let child_index = table_index.get(&(child.schema.as_str(), child.name.as_str()));
        let parent_index = table_index.get(&(parent.schema.as_str(), parent.name.as_str()));
        match (child_index, parent_index) {
            (Some(&child), Some(&parent)) => {
                taken.insert(entry.id);
                let add_valid = format!(
                    "alter table only {} add constraint {} {};",
                    ident::qualified(&fk.schema, &fk.table_name),
                    ident::quote(&fk.name),
                    fk.def
                );
                foreign_keys.push(ForeignKey { child, parent, add, validate, add_valid });
            }
            _ => {
                // The referenced table is partitioned (its key comes with the rest): add the
                // key NOT VALID in pg_dump's order, validate afterwards.
                late.insert(entry.id, Some(add));
                late_validations.push(validate);
            }
        }
    }
    let mut rest = Vec::new();
    for entry in post {
        if taken.contains(&entry.id) {
            continue;
        }
        if entry.kind == Kind::MatviewData && schema_only_matviews.contains(&entry.oid) {
            continue;
        }
        match late.remove(&entry.id) {
            Some(None) => {}
            Some(Some(add)) => rest.push(Rest::Step(add)),
            None => rest.push(Rest::Entry(entry)),
        }
    }
    Ok(PostData { tables, foreign_keys, rest, late_validations })
}
