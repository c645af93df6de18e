-- Foreign keys declared on ordinary tables (not inherited from a partitioned parent).
select con.oid::int8 as oid,
       con.conrelid::int8 as table_oid,
       n.nspname as schema,
       tc.relname as table_name,
       con.conname as name,
       con.confrelid::int8 as ref_oid,
       pg_catalog.pg_get_constraintdef(con.oid) as def,
       con.convalidated as validated
from pg_catalog.pg_constraint con
join pg_catalog.pg_class tc on tc.oid = con.conrelid
join pg_catalog.pg_namespace n on n.oid = tc.relnamespace
where con.contype = 'f'
  and con.conparentid = 0
  and n.nspname not in ('pg_catalog', 'information_schema', '_barge')
order by n.nspname, tc.relname, con.conname
