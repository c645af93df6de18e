-- Benchmark dataset "many": 20 tables of varied sizes with primary keys, secondary indexes
-- and foreign keys, the shape of a typical OLTP database: psql -v scale=1
-- gives about 1.1 GiB of heap and 0.6 GiB of indexes.
\set ON_ERROR_STOP on
select set_config('bench.scale', :'scale', false);
do $$
declare
    scale numeric := current_setting('bench.scale')::numeric;
    -- Relative sizes of the 20 tables (they sum to 100).
    weights int[] := array[18, 14, 11, 9, 8, 7, 6, 5, 4, 4, 3, 3, 2, 2, 1, 1, 1, 0, 0, 0];
    rows_total bigint := (8500000 * scale)::bigint;
    n bigint;
begin
    for i in 1 .. 20 loop
        n := greatest(1000, rows_total * weights[i] / 100);
        execute format($f$
            create table t%1$s (
                id bigint primary key,
                parent_id bigint,
                account int not null,
                label text not null,
                amount numeric(12, 2),
                created_at timestamptz not null,
                flags int[]
            )$f$, lpad(i::text, 2, '0'));
        execute format($f$
            insert into t%1$s
            select g, case when %2$s > 1 then 1 + (g::int8 * 7919) %% %3$s end, g %% 10007,
                   'label ' || md5(g::text), (g %% 100000) / 100.0,
                   timestamptz '2020-01-01' + g * interval '1 second', array[g %% 3, g %% 5]
            from generate_series(1::int8, %4$s) g$f$,
            lpad(i::text, 2, '0'), i, greatest(1000, rows_total * weights[1] / 100), n);
        execute format('create index t%1$s_account on t%1$s (account)', lpad(i::text, 2, '0'));
        if i % 2 = 0 then
            execute format('create index t%1$s_created on t%1$s (created_at)', lpad(i::text, 2, '0'));
        else
            execute format('create index t%1$s_account_created on t%1$s (account, created_at)', lpad(i::text, 2, '0'));
        end if;
        if i > 1 and i <= 10 then
            execute format('alter table t%1$s add foreign key (parent_id) references t01 (id)', lpad(i::text, 2, '0'));
        end if;
    end loop;
end $$;
vacuum analyze;
