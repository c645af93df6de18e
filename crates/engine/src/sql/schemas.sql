-- User schemas of the current database (not those created by extensions).
select n.nspname as name
from pg_catalog.pg_namespace n
where n.nspname not in ('pg_catalog', 'information_schema', '_barge')
  and n.nspname !~ '^pg_toast'
  and n.nspname !~ '^pg_temp'
  and not exists (select from pg_catalog.pg_depend e
                   where e.classid = 'pg_catalog.pg_namespace'::pg_catalog.regclass
                     and e.objid = n.oid and e.deptype = 'e')
order by n.nspname
