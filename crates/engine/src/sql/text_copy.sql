-- Tables whose rows must travel as text COPY rather than binary: a column (through any
-- domains) whose binary form carries OIDs that differ between clusters (reg* types,
-- composites, arrays of user-defined or composite elements) or that has no binary I/O.
with recursive cols(relid, typid, depth) as (
    select a.attrelid, a.atttypid, 0
    from pg_catalog.pg_attribute a
    join pg_catalog.pg_class c on c.oid = a.attrelid
    join pg_catalog.pg_namespace n on n.oid = c.relnamespace
    where c.relkind = 'r'
      and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname !~ '^pg_toast'
      and a.attnum > 0 and not a.attisdropped and a.attgenerated = ''
  union all
    select cols.relid, t.typbasetype, cols.depth + 1
    from cols
    join pg_catalog.pg_type t on t.oid = cols.typid
    where t.typtype = 'd' and cols.depth < 16
),
oid_types(oid) as (
    select t.oid
    from pg_catalog.pg_type t
    where t.typnamespace = 'pg_catalog'::pg_catalog.regnamespace
      and t.typname in ('regproc', 'regprocedure', 'regoper', 'regoperator', 'regclass',
                        'regtype', 'regconfig', 'regdictionary', 'regnamespace', 'regrole',
                        'regcollation')
)
select distinct cols.relid::int8 as oid
from cols
join pg_catalog.pg_type t on t.oid = cols.typid
left join pg_catalog.pg_type e on e.oid = t.typelem and t.typcategory = 'A'
where t.typtype <> 'd'
  and (t.typsend::oid = 0
       or t.typreceive::oid = 0
       or t.typtype = 'c'
       or t.oid in (select oid from oid_types)
       or (e.oid is not null
           and (e.oid >= 16384 or e.typtype in ('c', 'd') or e.oid in (select oid from oid_types))))
