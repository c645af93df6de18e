-- Ordinary tables without a primary key, and whether logical replication could still identify
-- their rows (REPLICA IDENTITY FULL or USING INDEX).
select n.nspname as schema,
       c.relname as name,
       c.relreplident in ('f', 'i') as identified
from pg_catalog.pg_class c
join pg_catalog.pg_namespace n on n.oid = c.relnamespace
where c.relkind = 'r'
  and n.nspname not in ('pg_catalog', 'information_schema', '_barge')
  and n.nspname !~ '^pg_toast'
  and not exists (select from pg_catalog.pg_index x where x.indrelid = c.oid and x.indisprimary)
order by 1, 2
