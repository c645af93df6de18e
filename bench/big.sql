-- Benchmark dataset "big": one large table with a primary key and two secondary indexes,
-- plus five small tables: the shape of a typical large-table database. psql -v scale=1
-- gives about 1.1 GiB of heap.
\set ON_ERROR_STOP on
create table big (
    id bigint primary key,
    account int not null,
    label text not null,
    amount numeric(12, 2),
    created_at timestamptz not null
);
insert into big
select g, g % 100003, 'row ' || md5(g::text), (g % 100000) / 100.0, timestamptz '2020-01-01' + g * interval '1 second'
from generate_series(1, (12500000 * :scale)::bigint) g;
create index big_account on big (account);
create index big_created on big (created_at);
do $$
begin
    for i in 1 .. 5 loop
        execute format('create table small%s (id int primary key, name text)', i);
        execute format('insert into small%s select g, md5(g::text) from generate_series(1, 10000) g', i);
    end loop;
end $$;
vacuum analyze;
