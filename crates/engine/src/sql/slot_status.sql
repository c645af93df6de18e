-- A barge slot on the source: whether a subscriber streams from it, how far behind its
-- confirmed position is, the subscriber's measured replay lag, and the WAL it keeps on the
-- source's disk (docs/sync.md, "The source's disk"). Columns that only some versions have
-- (safe_wal_size 13+, failover and invalidation_reason 17+) are read through to_jsonb, so
-- one query serves every version.
select s.active,
       pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), s.confirmed_flush_lsn)::int8 as lag_bytes,
       pg_catalog.pg_wal_lsn_diff(s.confirmed_flush_lsn, '0/0')::int8 as confirmed,
       (select extract(epoch from coalesce(r.replay_lag, r.flush_lag, r.write_lag))::float8
          from pg_catalog.pg_stat_replication r where r.pid = s.active_pid) as lag_seconds,
       s.wal_status::text as wal_status,
       pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), s.restart_lsn)::int8 as retained_bytes,
       (pg_catalog.to_jsonb(s) ->> 'safe_wal_size')::int8 as safe_wal_bytes,
       (pg_catalog.to_jsonb(s) ->> 'failover')::bool as failover,
       coalesce(pg_catalog.to_jsonb(s) ->> 'invalidation_reason',
                case when s.wal_status = 'lost' then 'wal_removed' end) as invalidated,
       (select case when setting::int8 < 0 then null else setting::int8 * 1024 * 1024 end
          from pg_catalog.pg_settings where name = 'max_slot_wal_keep_size') as keep_limit_bytes
from pg_catalog.pg_replication_slots s
where s.slot_name = $1
