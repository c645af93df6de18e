-- Primary key columns of ordinary tables, in key order.
select x.indrelid::int8 as table_oid,
       array(select a.attname::text
               from unnest(x.indkey[0:x.indnkeyatts - 1]) with ordinality k(attnum, ord)
               join pg_catalog.pg_attribute a on a.attrelid = x.indrelid and a.attnum = k.attnum
              order by k.ord) as columns
from pg_catalog.pg_index x
join pg_catalog.pg_class c on c.oid = x.indrelid
join pg_catalog.pg_namespace n on n.oid = c.relnamespace
where x.indisprimary and c.relkind = 'r'
  and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname !~ '^pg_toast'
