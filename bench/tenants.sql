-- Benchmark dataset "tenants": many small objects, as in schema-per-tenant SaaS databases.
-- psql -v tables=5000 gives 50 schemas of 100 tables (about 100 rows each, an identity key,
-- a secondary index, a foreign key to the schema's accounts table, a CHECK and a trigger)
-- and a table of 200 partitions: about 250 MB on disk, a fifth of it rows. Each schema
-- commits on its own, so generating it needs no more than PostgreSQL's default lock table.
\set ON_ERROR_STOP on
select set_config('bench.tables', :'tables', false);
create function public.touch() returns trigger language plpgsql as $$
begin
    new.updated_at := now();
    return new;
end $$;
do $$
declare
    total int := current_setting('bench.tables')::int;
    per_schema constant int := 100;
    made int := 0;
    s text;
    t text;
begin
    for i in 1 .. greatest(1, (total + per_schema - 1) / per_schema) loop
        s := format('tenant_%s', lpad(i::text, 3, '0'));
        execute format('create schema %I', s);
        execute format($f$
            create table %I.accounts (
                id int generated always as identity primary key,
                name text not null check (name <> ''),
                updated_at timestamptz not null default now()
            )$f$, s);
        execute format($f$insert into %I.accounts (name) select 'account ' || g from generate_series(1, 100) g$f$, s);
        made := made + 1;
        for j in 2 .. per_schema loop
            exit when made >= total;
            t := format('t%s', lpad(j::text, 3, '0'));
            execute format($f$
                create table %1$I.%2$I (
                    id bigint generated always as identity primary key,
                    account int not null references %1$I.accounts (id),
                    kind text not null check (kind in ('a', 'b', 'c')),
                    amount numeric(10, 2),
                    note text,
                    updated_at timestamptz not null default now()
                )$f$, s, t);
            execute format('create index on %I.%I (account, updated_at)', s, t);
            execute format('create trigger touch before update on %I.%I for each row execute function public.touch()', s, t);
            execute format($f$
                insert into %I.%I (account, kind, amount, note)
                select 1 + g %% 100, (array['a', 'b', 'c'])[1 + g %% 3], g / 7.0, md5(g::text)
                from generate_series(1, 100) g$f$, s, t);
            made := made + 1;
        end loop;
        commit;
    end loop;
end $$;
create table public.events (
    id bigint generated always as identity,
    day date not null,
    payload text,
    primary key (id, day)
) partition by range (day);
do $$
begin
    for d in 0 .. 199 loop
        execute format('create table public.events_%s partition of public.events for values from (%L) to (%L)',
            lpad(d::text, 3, '0'), date '2026-01-01' + d, date '2026-01-01' + d + 1);
        execute format($f$insert into public.events (day, payload)
            select %L::date, md5(g::text) from generate_series(1, 100) g$f$, date '2026-01-01' + d);
        commit;
    end loop;
end $$;

-- As autovacuum would have by now on a live database: statistics barge carries to the target.
analyze;
