-- Sequences of the current database (their positions are read from each sequence itself:
-- pg_sequences shows no last_value for a sequence whose position was set but not called).
-- Read with the source's privileges: a sequence the user cannot read is reported, never
-- silently reset.
select n.nspname::text as schema,
       c.relname::text as name,
       pg_catalog.has_sequence_privilege(c.oid, 'SELECT') as readable
from pg_catalog.pg_class c
join pg_catalog.pg_namespace n on n.oid = c.relnamespace
where c.relkind = 'S'
  and n.nspname not in ('_barge', 'pg_catalog', 'information_schema')
  and n.nspname !~ '^pg_toast'
order by 1, 2
