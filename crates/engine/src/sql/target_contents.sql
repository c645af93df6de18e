-- What a target database already holds, to refuse overwriting it: user relations, schemas
-- other than public, functions, types, large objects; and whether an interrupted barge
-- copy left its progress marks (schema _barge).
with user_ns as (
    select n.oid, n.nspname
    from pg_catalog.pg_namespace n
    where n.nspname not in ('pg_catalog', 'information_schema', '_barge')
      and n.nspname !~ '^pg_toast' and n.nspname !~ '^pg_temp'
),
rels as (
    select ns.nspname, c.relname, c.relkind
    from pg_catalog.pg_class c
    join user_ns ns on ns.oid = c.relnamespace
    where c.relkind in ('r', 'p', 'v', 'm', 'f', 'S')
      and not exists (select from pg_catalog.pg_depend e
                      where e.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                        and e.objid = c.oid and e.deptype = 'e')
)
select (select count(*) from rels where relkind in ('r', 'p')) as tables,
       (select count(*) from rels where relkind not in ('r', 'p')) as other_relations,
       (select array_agg(x) from (select pg_catalog.quote_ident(nspname) || '.' || pg_catalog.quote_ident(relname) as x
                                    from rels where relkind in ('r', 'p') order by 1 limit 3) s) as sample,
       (select count(*) from user_ns
         where nspname <> 'public'
           and not exists (select from pg_catalog.pg_depend e
                           where e.classid = 'pg_catalog.pg_namespace'::pg_catalog.regclass
                             and e.objid = user_ns.oid and e.deptype = 'e')) as schemas,
       (select count(*) from pg_catalog.pg_proc p join user_ns ns on ns.oid = p.pronamespace
         where not exists (select from pg_catalog.pg_depend e
                           where e.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
                             and e.objid = p.oid and e.deptype = 'e')) as functions,
       (select count(*) from pg_catalog.pg_largeobject_metadata) as large_objects,
       (select count(*) from pg_catalog.pg_extension where extname <> 'plpgsql') as extensions,
       pg_catalog.pg_database_size(pg_catalog.current_database()) as bytes,
       exists (select from pg_catalog.pg_namespace where nspname = '_barge') as interrupted
