-- Databases a copy can read: connectable, not templates, with their size.
select d.datname as name,
       pg_catalog.pg_database_size(d.oid) as bytes
from pg_catalog.pg_database d
where d.datallowconn
  and not d.datistemplate
  and pg_catalog.has_database_privilege(d.oid, 'CONNECT')
order by d.datname
