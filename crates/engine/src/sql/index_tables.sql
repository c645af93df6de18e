-- The table of each index sql/indexes.sql lists (valid indexes of ordinary tables), without
-- the definitions: what counting them needs.
select x.indrelid::int8 as table_oid
from pg_catalog.pg_index x
join pg_catalog.pg_class tc on tc.oid = x.indrelid
join pg_catalog.pg_namespace n on n.oid = tc.relnamespace
where tc.relkind = 'r'
  and x.indisvalid
  and n.nspname not in ('pg_catalog', 'information_schema', '_barge')
  and n.nspname !~ '^pg_toast'
