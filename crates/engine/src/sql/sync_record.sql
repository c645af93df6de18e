-- Where a target database records the syncs it receives (one row per subscription, written
-- in the transaction that creates it).
create schema if not exists _barge;
create table if not exists _barge.sync (
    name text primary key,
    source_database text not null,
    tables int8 not null,
    fingerprint jsonb not null,
    filter jsonb not null,
    created_at timestamptz not null default now()
);
-- Added after the first release: what later runs act on (the WAL guard's thresholds).
alter table _barge.sync add column if not exists settings jsonb not null default '{}'::jsonb
