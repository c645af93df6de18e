-- Whether the current database holds the subscription $1.
select 1
from pg_catalog.pg_subscription
where subname = $1
  and subdbid = (select oid from pg_catalog.pg_database where datname = pg_catalog.current_database())
