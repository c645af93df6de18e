-- Each table's structure as far as logical replication and a sync's target depend on it
-- (docs/sync.md, "Schema changes"): kind, persistence and replica identity, the columns by
-- number with their type, nullability, generation, collation and default, and the indexes
-- with the constraints they back. `digest` is the form earlier barge versions recorded.
-- Every name and expression is the server's own rendering (format_type, pg_get_expr,
-- pg_get_indexdef, pg_get_constraintdef); `missing` is the value rows that existed before
-- an `ADD COLUMN … DEFAULT` read (PostgreSQL 11+), as text.
select n.nspname::text as schema,
       c.relname::text as name,
       c.oid::int8 as oid,
       c.relkind::text || c.relpersistence::text || c.relreplident::text as kind,
       (select ri.relname::text from pg_catalog.pg_index i join pg_catalog.pg_class ri on ri.oid = i.indexrelid
         where i.indrelid = c.oid and i.indisreplident) as replica_index,
       pg_catalog.md5(c.relkind::text || c.relpersistence::text || c.relreplident::text || ':' || coalesce((
           select pg_catalog.string_agg(a.attname::text || ' ' || pg_catalog.format_type(a.atttypid, a.atttypmod)
                      || case when a.attnotnull then ' not null' else '' end
                      || case when a.attgenerated <> '' then ' generated' else '' end,
                  ', ' order by a.attnum)
           from pg_catalog.pg_attribute a
           where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped), '')) as digest,
       coalesce((
           select pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                      'num', a.attnum,
                      'name', a.attname::text,
                      'type', pg_catalog.format_type(a.atttypid, a.atttypmod),
                      'type_oid', a.atttypid::int8,
                      'typmod', a.atttypmod,
                      'not_null', a.attnotnull,
                      'generated', a.attgenerated <> '',
                      'collation', case when a.attcollation <> t.typcollation and a.attcollation <> 0
                                        then (select pg_catalog.quote_ident(cn.nspname) || '.' || pg_catalog.quote_ident(co.collname)
                                              from pg_catalog.pg_collation co
                                              join pg_catalog.pg_namespace cn on cn.oid = co.collnamespace
                                              where co.oid = a.attcollation) end,
                      'default', (select pg_catalog.pg_get_expr(d.adbin, d.adrelid) from pg_catalog.pg_attrdef d
                                   where d.adrelid = a.attrelid and d.adnum = a.attnum),
                      'missing', case when a.atthasmissing and t.typcategory <> 'A'
                                      then (a.attmissingval::text::text[])[1] end)
                  order by a.attnum)
           from pg_catalog.pg_attribute a
           join pg_catalog.pg_type t on t.oid = a.atttypid
           where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped), '[]')::text as columns,
       coalesce((
           select pg_catalog.jsonb_object_agg(ic.relname::text, pg_catalog.jsonb_build_object(
                      'definition', pg_catalog.pg_get_indexdef(i.indexrelid),
                      'constraint', con.conname::text,
                      'constraint_definition', pg_catalog.pg_get_constraintdef(con.oid),
                      'valid', i.indisvalid,
                      'inherited', exists (select 1 from pg_catalog.pg_inherits h where h.inhrelid = i.indexrelid)))
           from pg_catalog.pg_index i
           join pg_catalog.pg_class ic on ic.oid = i.indexrelid
           left join pg_catalog.pg_constraint con on con.conindid = i.indexrelid and con.conrelid = c.oid
                                                  and con.contype in ('p', 'u', 'x')
           where i.indrelid = c.oid), '{}')::text as indexes
from pg_catalog.pg_class c
join pg_catalog.pg_namespace n on n.oid = c.relnamespace
where c.relkind in ('r', 'p')
  and n.nspname not in ('pg_catalog', 'information_schema', '_barge')
  and n.nspname !~ '^pg_(toast|temp_)'
