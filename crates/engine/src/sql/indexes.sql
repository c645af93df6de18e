-- Valid indexes of ordinary tables (partitions included) with their definition and, for
-- those behind a primary key, unique or exclusion constraint, that constraint. barge builds
-- these itself as soon as a table's rows are in.
select x.indexrelid::int8 as index_oid,
       n.nspname as schema,
       ic.relname as index_name,
       x.indrelid::int8 as table_oid,
       tc.relname as table_name,
       pg_catalog.pg_get_indexdef(x.indexrelid) as indexdef,
       con.contype::text as contype,
       con.oid::int8 as con_oid,
       con.conname as conname,
       case when con.contype = 'x' then pg_catalog.pg_get_constraintdef(con.oid) end as condef,
       coalesce(con.condeferrable, false) as deferrable,
       coalesce(con.condeferred, false) as deferred
from pg_catalog.pg_index x
join pg_catalog.pg_class ic on ic.oid = x.indexrelid
join pg_catalog.pg_class tc on tc.oid = x.indrelid
join pg_catalog.pg_namespace n on n.oid = tc.relnamespace
left join pg_catalog.pg_constraint con
       on con.conindid = x.indexrelid and con.conrelid = x.indrelid and con.contype in ('p', 'u', 'x')
where tc.relkind = 'r'
  and x.indisvalid
  and n.nspname not in ('pg_catalog', 'information_schema', '_barge')
  and n.nspname !~ '^pg_toast'
order by n.nspname, tc.relname, ic.relname
