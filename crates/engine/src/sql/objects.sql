-- Schema objects of the current database as (kind, schema, relation, name), for comparing
-- two databases object by object. Objects created by extensions are left out, and so are
-- NOT NULL constraints (catalogued only since PostgreSQL 18).
with ns as (
    select n.oid, n.nspname
    from pg_catalog.pg_namespace n
    where n.nspname not in ('pg_catalog', 'information_schema', '_barge')
      and n.nspname !~ '^pg_toast' and n.nspname !~ '^pg_temp'
),
ext as (
    select d.classid, d.objid from pg_catalog.pg_depend d where d.deptype = 'e'
),
rel as (
    select c.oid, ns.nspname, c.relname, c.relkind
    from pg_catalog.pg_class c
    join ns on ns.oid = c.relnamespace
    where c.relkind in ('r', 'p', 'v', 'm', 'S', 'f')
      and (('pg_catalog.pg_class'::pg_catalog.regclass, c.oid) not in (select classid, objid from ext))
)
select case relkind when 'r' then 'table' when 'p' then 'table' when 'v' then 'view'
                    when 'm' then 'materialized view' when 'S' then 'sequence' else 'foreign table' end as kind,
       nspname as schema, relname as relation, relname as name
from rel
union all
select 'index', rel.nspname, rel.relname, ic.relname
from pg_catalog.pg_index x
join rel on rel.oid = x.indrelid
join pg_catalog.pg_class ic on ic.oid = x.indexrelid
union all
select case con.contype when 'p' then 'primary key' when 'u' then 'unique constraint'
                        when 'f' then 'foreign key' when 'c' then 'check constraint'
                        when 'x' then 'exclusion constraint' else 'constraint' end,
       rel.nspname, rel.relname, con.conname
from pg_catalog.pg_constraint con
join rel on rel.oid = con.conrelid
where con.contype <> 'n'
union all
select 'trigger', rel.nspname, rel.relname, t.tgname
from pg_catalog.pg_trigger t
join rel on rel.oid = t.tgrelid
where not t.tgisinternal
union all
select 'policy', rel.nspname, rel.relname, p.polname
from pg_catalog.pg_policy p
join rel on rel.oid = p.polrelid
union all
select 'rule', rel.nspname, rel.relname, r.rulename
from pg_catalog.pg_rewrite r
join rel on rel.oid = r.ev_class
where r.rulename <> '_RETURN'
union all
select case p.prokind when 'p' then 'procedure' when 'a' then 'aggregate' else 'function' end,
       ns.nspname, null, p.proname || '(' || pg_catalog.pg_get_function_identity_arguments(p.oid) || ')'
from pg_catalog.pg_proc p
join ns on ns.oid = p.pronamespace
where ('pg_catalog.pg_proc'::pg_catalog.regclass, p.oid) not in (select classid, objid from ext)
union all
select case t.typtype when 'e' then 'enum' when 'd' then 'domain' when 'r' then 'range type' else 'composite type' end,
       ns.nspname, null, t.typname
from pg_catalog.pg_type t
join ns on ns.oid = t.typnamespace
where t.typtype in ('e', 'd', 'r', 'c')
  and (t.typtype <> 'c' or (select c.relkind from pg_catalog.pg_class c where c.oid = t.typrelid) = 'c')
  and ('pg_catalog.pg_type'::pg_catalog.regclass, t.oid) not in (select classid, objid from ext)
union all
select 'schema', ns.nspname, null, ns.nspname
from ns
where ('pg_catalog.pg_namespace'::pg_catalog.regclass, ns.oid) not in (select classid, objid from ext)
union all
select 'extension', '-', null, e.extname
from pg_catalog.pg_extension e
where e.extname <> 'plpgsql'
