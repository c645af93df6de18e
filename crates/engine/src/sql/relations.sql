-- Every user relation of the current database with what planning needs: its kind, size
-- (what COPY moves, not what the files take), estimated rows,
-- the columns COPY moves (generated columns are recomputed by the target), a single-column
-- integer primary key to split on, the partition parent, the table owning a sequence, and
-- whether the table sets its own autovacuum_enabled, and whether it has extended statistics.
select c.oid::int8 as oid,
       n.nspname as schema,
       c.relname as name,
       c.relkind::text as kind,
       c.relpersistence::text as persistence,
       (select i.inhparent::int8
          from pg_catalog.pg_inherits i
         where i.inhrelid = c.oid and c.relispartition) as parent,
       -- What COPY moves follows the heap and its TOAST data: their main forks, without the
       -- free-space and visibility maps that are most of a small table's size on disk.
       case when c.relkind in ('r', 'm')
            then pg_catalog.pg_relation_size(c.oid)
                 + case when c.reltoastrelid <> 0 then pg_catalog.pg_relation_size(c.reltoastrelid) else 0 end
            else 0 end as bytes,
       case when c.relkind in ('r', 'm') then pg_catalog.pg_relation_size(c.oid) else 0 end as heap_bytes,
       -- As the planner does: the density last measured times the pages there are now.
       case when c.reltuples > 0 and c.relpages > 0
            then c.reltuples / c.relpages
                 * (pg_catalog.pg_relation_size(c.oid) / pg_catalog.current_setting('block_size')::int8)
            else greatest(c.reltuples, 0) end::float8 as est_rows,
       -- Whether that measure means anything: reltuples is -1 until a VACUUM or ANALYZE (0 on
       -- servers before 14), while the table may hold rows by now.
       (c.reltuples > 0 and c.relpages > 0) or pg_catalog.pg_relation_size(c.oid) = 0 as counted,
       -- A row's size on disk from its column types, for tables never counted.
       (select coalesce(sum(case when t.typlen > 0 then t.typlen else 32 end), 0)::int8 + 28
          from pg_catalog.pg_attribute a
          join pg_catalog.pg_type t on t.oid = a.atttypid
         where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped) as row_width,
       array(select a.attname::text
               from pg_catalog.pg_attribute a
              where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped and a.attgenerated = ''
              order by a.attnum) as columns,
       (select a.attname::text
          from pg_catalog.pg_index x
          join pg_catalog.pg_attribute a on a.attrelid = x.indrelid and a.attnum = x.indkey[0]
         where x.indrelid = c.oid and x.indisprimary and x.indnkeyatts = 1
           and a.atttypid in ('pg_catalog.int2'::pg_catalog.regtype,
                              'pg_catalog.int4'::pg_catalog.regtype,
                              'pg_catalog.int8'::pg_catalog.regtype)) as int_key,
       (select d.refobjid::int8
          from pg_catalog.pg_depend d
         where c.relkind = 'S'
           and d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass and d.objid = c.oid
           and d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass and d.deptype in ('a', 'i')
         limit 1) as owned_by,
       coalesce(array_to_string(c.reloptions, ','), '') ~ 'autovacuum_enabled' as own_autovacuum,
       exists (select from pg_catalog.pg_statistic_ext x where x.stxrelid = c.oid) as extended_statistics
from pg_catalog.pg_class c
join pg_catalog.pg_namespace n on n.oid = c.relnamespace
where c.relkind in ('r', 'p', 'm', 'v', 'f', 'S')
  and n.nspname not in ('pg_catalog', 'information_schema', '_barge')
  and n.nspname !~ '^pg_toast'
  and n.nspname !~ '^pg_temp'
  and not exists (select from pg_catalog.pg_depend e
                   where e.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                     and e.objid = c.oid and e.deptype = 'e')
order by n.nspname, c.relname
