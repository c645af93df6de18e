-- Every user relation of the current database (as sql/relations.sql selects them) with no
-- more than the copy needs to match catalog objects to pg_dump's entries: OID, schema,
-- name, kind, the table owning a sequence (identity or OWNED BY), and the tables a table
-- inherits from (or is a partition of).
select c.oid::int8 as oid,
       n.nspname as schema,
       c.relname as name,
       c.relkind::text as kind,
       (select d.refobjid::int8
          from pg_catalog.pg_depend d
         where c.relkind = 'S'
           and d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass and d.objid = c.oid
           and d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass and d.deptype in ('a', 'i')
         limit 1) as owned_by,
       array(select i.inhparent::int8 from pg_catalog.pg_inherits i where i.inhrelid = c.oid) as parents
from pg_catalog.pg_class c
join pg_catalog.pg_namespace n on n.oid = c.relnamespace
where c.relkind in ('r', 'p', 'm', 'v', 'f', 'S')
  and n.nspname not in ('pg_catalog', 'information_schema', '_barge')
  and n.nspname !~ '^pg_toast'
  and n.nspname !~ '^pg_temp'
  and not exists (select from pg_catalog.pg_depend e
                   where e.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                     and e.objid = c.oid and e.deptype = 'e')
