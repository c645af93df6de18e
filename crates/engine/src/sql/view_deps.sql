-- Which relations each view and materialized view reads.
select distinct rw.ev_class::int8 as view_oid, d.refobjid::int8 as ref_oid
from pg_catalog.pg_rewrite rw
join pg_catalog.pg_depend d
  on d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass
 and d.objid = rw.oid
 and d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
 and d.refobjid <> rw.ev_class
