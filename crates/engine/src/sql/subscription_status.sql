-- A barge subscription in the current target database: enabled, per-table states
-- (docs/design-notes.md 13: the state is per table, in pg_subscription_rel) and the rows applied so far.
select s.subenabled as enabled,
       (select count(*) from pg_catalog.pg_subscription_rel r where r.srsubid = s.oid)::int8 as tables,
       coalesce((select pg_catalog.array_agg(r.srrelid::pg_catalog.regclass::text || ' (' || r.srsubstate::text || ')' order by 1)
                   from pg_catalog.pg_subscription_rel r where r.srsubid = s.oid and r.srsubstate <> 'r'), '{}') as not_ready,
       coalesce((select sum(t.n_tup_ins + t.n_tup_upd + t.n_tup_del) from pg_catalog.pg_stat_user_tables t), 0)::int8 as applied_rows,
       (select count(*) from pg_catalog.pg_stat_subscription w where w.subid = s.oid and w.pid is not null)::int8 as workers
from pg_catalog.pg_subscription s
where s.subname = $1
  and s.subdbid = (select d.oid from pg_catalog.pg_database d where d.datname = pg_catalog.current_database())
