-- A barge slot on the source: whether a subscriber streams from it, how far behind its
-- confirmed position is, and the subscriber's measured replay lag.
select s.active,
       pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), s.confirmed_flush_lsn)::int8 as lag_bytes,
       pg_catalog.pg_wal_lsn_diff(s.confirmed_flush_lsn, '0/0')::int8 as confirmed,
       (select extract(epoch from coalesce(r.replay_lag, r.flush_lag, r.write_lag))::float8
          from pg_catalog.pg_stat_replication r where r.pid = s.active_pid) as lag_seconds,
       s.wal_status::text as wal_status
from pg_catalog.pg_replication_slots s
where s.slot_name = $1
