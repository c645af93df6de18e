-- barge's subscriptions on a server, by database: $1 is a LIKE pattern of their names.
select d.datname::text, s.subname::text
from pg_catalog.pg_subscription s
join pg_catalog.pg_database d on d.oid = s.subdbid
where s.subname like $1
order by 1, 2
