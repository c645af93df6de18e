-- The planner statistics ANALYZE last stored on the source for one table ($1 schema, $2 name):
-- its columns' and those of the expressions of its indexes (an index lives in its table's
-- schema), as pg_stats shows them to this session, in the forms
-- pg_restore_attribute_stats takes (value lists as text; frequency lists as their text, cast
-- back on the target). The range columns exist from PostgreSQL 17 on: {range} stands for
-- them or for three nulls.
select s.tablename::text as rel,
       s.attname::text as att,
       s.inherited,
       s.null_frac,
       s.avg_width,
       s.n_distinct,
       s.most_common_vals::text as mcv,
       s.most_common_freqs::text as mcf,
       s.histogram_bounds::text as hist,
       s.correlation,
       s.most_common_elems::text as mce,
       s.most_common_elem_freqs::text as mcef,
       s.elem_count_histogram::text as ech,
       {range}
from pg_catalog.pg_stats s
where s.schemaname = $1
  and (s.tablename = $2
       or s.tablename in (select i.relname
                            from pg_catalog.pg_class t
                            join pg_catalog.pg_namespace n on n.oid = t.relnamespace
                            join pg_catalog.pg_index x on x.indrelid = t.oid
                            join pg_catalog.pg_class i on i.oid = x.indexrelid
                           where n.nspname = $1 and t.relname = $2 and x.indexprs is not null))
order by s.tablename = $2 desc, s.tablename, s.attname, s.inherited
