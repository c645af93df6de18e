-- Sequences of the current database with their position (read with the source's
-- privileges: a sequence the user cannot read is reported, never silently reset).
select s.schemaname as schema,
       s.sequencename as name,
       s.last_value,
       s.start_value,
       pg_catalog.has_sequence_privilege(
           pg_catalog.quote_ident(s.schemaname) || '.' || pg_catalog.quote_ident(s.sequencename),
           'SELECT,USAGE') as readable
from pg_catalog.pg_sequences s
where s.schemaname <> '_barge'
order by 1, 2
