-- Whether the current user may create a subscription here: a superuser, or on PostgreSQL
-- 16+ a member of pg_create_subscription with CREATE on the database.
select r.rolsuper
       or (pg_catalog.current_setting('server_version_num')::int >= 160000
           and pg_catalog.pg_has_role(current_user, 'pg_create_subscription', 'member')
           and pg_catalog.has_database_privilege(current_user, pg_catalog.current_database(), 'CREATE'))
from pg_catalog.pg_roles r
where r.rolname = current_user
