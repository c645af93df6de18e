-- Roles that own objects in the current database or in its large objects, which must
-- exist on the target unless ownership is dropped.
select distinct pg_catalog.pg_get_userbyid(o) as role
from (
    select d.datdba as o from pg_catalog.pg_database d where d.datname = pg_catalog.current_database()
    union select n.nspowner from pg_catalog.pg_namespace n
           where n.nspname not in ('pg_catalog', 'information_schema') and n.nspname !~ '^pg_'
    union select c.relowner from pg_catalog.pg_class c
           join pg_catalog.pg_namespace n on n.oid = c.relnamespace
           where n.nspname not in ('pg_catalog', 'information_schema') and n.nspname !~ '^pg_'
    union select p.proowner from pg_catalog.pg_proc p
           join pg_catalog.pg_namespace n on n.oid = p.pronamespace
           where n.nspname not in ('pg_catalog', 'information_schema') and n.nspname !~ '^pg_'
    union select t.typowner from pg_catalog.pg_type t
           join pg_catalog.pg_namespace n on n.oid = t.typnamespace
           where n.nspname not in ('pg_catalog', 'information_schema') and n.nspname !~ '^pg_'
    union select l.lomowner from pg_catalog.pg_largeobject_metadata l
) owners
order by 1
