-- Whether the current user may publish the tables $1 (qualified names): how many of them
-- it does not own (nor is a member of their owner), and whether it has CREATE on the database.
select count(*) filter (where not pg_catalog.pg_has_role(current_user, c.relowner, 'USAGE'))::int8,
       pg_catalog.has_database_privilege(current_user, pg_catalog.current_database(), 'CREATE')
from pg_catalog.pg_class c
where c.oid = any($1::text[]::pg_catalog.regclass[])
