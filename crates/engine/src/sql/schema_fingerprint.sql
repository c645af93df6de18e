-- One digest per table: what logical replication depends on (kind, persistence, replica
-- identity, the columns with their types, nullability and generation). A change on the
-- source while syncing makes the target diverge or the apply stop.
select n.nspname::text as schema,
       c.relname::text as name,
       pg_catalog.md5(c.relkind::text || c.relpersistence::text || c.relreplident::text || ':' || coalesce((
           select pg_catalog.string_agg(a.attname::text || ' ' || pg_catalog.format_type(a.atttypid, a.atttypmod)
                      || case when a.attnotnull then ' not null' else '' end
                      || case when a.attgenerated <> '' then ' generated' else '' end,
                  ', ' order by a.attnum)
           from pg_catalog.pg_attribute a
           where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped), '')) as digest
from pg_catalog.pg_class c
join pg_catalog.pg_namespace n on n.oid = c.relnamespace
where c.relkind in ('r', 'p')
  and n.nspname not in ('pg_catalog', 'information_schema', '_barge')
  and n.nspname !~ '^pg_(toast|temp_)'
