-- Gives a copied table ($1 schema, $2 name) the planner statistics ANALYZE would have: its
-- size from the target's own files, the rows copied ($3) and, when it was loaded frozen ($5),
-- every page all-visible and all-frozen; its columns' and its expression indexes' statistics
-- as the source ($4: server_version_num) measured them, bound as arrays ($6…$21, one element
-- per column), never written into this text. An index column is found by its name on the
-- target. Answers how many of the calls succeeded: one for the table and one per column when
-- all did.
with pages as (
    select (pg_catalog.pg_relation_size(c.oid) / pg_catalog.current_setting('block_size')::int8)::int4 as n
      from pg_catalog.pg_class c
      join pg_catalog.pg_namespace ns on ns.oid = c.relnamespace
     where ns.nspname = $1 and c.relname = $2
), relation as (
    select pg_catalog.pg_restore_relation_stats(
               'schemaname', $1::text, 'relname', $2::text, 'version', $4::int4,
               'relpages', p.n, 'reltuples', $3::float4,
               'relallvisible', case when $5::bool then p.n else 0 end,
               'relallfrozen', case when $5::bool then p.n else 0 end) as ok
      from pages p
), columns as (
    select pg_catalog.pg_restore_attribute_stats(
               'schemaname', $1::text, 'relname', s.rel, 'attnum', a.attnum, 'inherited', s.inh,
               'version', $4::int4,
               'null_frac', s.null_frac, 'avg_width', s.avg_width, 'n_distinct', s.n_distinct,
               'most_common_vals', s.mcv, 'most_common_freqs', s.mcf::float4[],
               'histogram_bounds', s.hist, 'correlation', s.corr,
               'most_common_elems', s.mce, 'most_common_elem_freqs', s.mcef::float4[],
               'elem_count_histogram', s.ech::float4[],
               'range_length_histogram', s.rlh, 'range_empty_frac', s.ref,
               'range_bounds_histogram', s.rbh) as ok
      from rows from (pg_catalog.unnest($6::text[]), pg_catalog.unnest($7::text[]), pg_catalog.unnest($8::bool[]),
                      pg_catalog.unnest($9::float4[]), pg_catalog.unnest($10::int4[]),
                      pg_catalog.unnest($11::float4[]), pg_catalog.unnest($12::text[]),
                      pg_catalog.unnest($13::text[]), pg_catalog.unnest($14::text[]),
                      pg_catalog.unnest($15::float4[]), pg_catalog.unnest($16::text[]),
                      pg_catalog.unnest($17::text[]), pg_catalog.unnest($18::text[]),
                      pg_catalog.unnest($19::text[]), pg_catalog.unnest($20::float4[]),
                      pg_catalog.unnest($21::text[]))
           as s(rel, att, inh, null_frac, avg_width, n_distinct, mcv, mcf, hist, corr, mce, mcef, ech, rlh, ref, rbh)
      join pg_catalog.pg_namespace ns on ns.nspname = $1
      join pg_catalog.pg_class c on c.relnamespace = ns.oid and c.relname = s.rel
      join pg_catalog.pg_attribute a on a.attrelid = c.oid and a.attname = s.att and a.attnum > 0
                                    and not a.attisdropped
)
select ((select count(*) from relation where ok) + (select count(*) from columns where ok))::int8
