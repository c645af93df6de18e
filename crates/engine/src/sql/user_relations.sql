-- The user relations of the current database: what barge copies or recreates. Catalogs,
-- TOAST, temporary schemas, barge's own marks and extension members are left out. The
-- queries that read relations (sql/relations.sql, sql/relation_names.sql) select from this
-- where they say {user_relations}, so they always agree on what a user relation is.
select c.oid, n.nspname, c.relname, c.relkind, c.relpersistence, c.relispartition, c.reltuples,
       c.relpages, c.reloptions, c.reltoastrelid
  from pg_catalog.pg_class c
  join pg_catalog.pg_namespace n on n.oid = c.relnamespace
 where c.relkind in ('r', 'p', 'm', 'v', 'f', 'S')
   and n.nspname not in ('pg_catalog', 'information_schema', '_barge')
   and n.nspname !~ '^pg_toast'
   and n.nspname !~ '^pg_temp'
   and not exists (select from pg_catalog.pg_depend e
                    where e.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                      and e.objid = c.oid and e.deptype = 'e')
