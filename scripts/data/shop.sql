-- The demo's sample database: a shop with several schemas, a big table, foreign keys, a
-- materialized view, a sequence in use and a large object. Scale with psql -v scale=N
-- (1 ≈ 150 MB; fractions such as 0.05 make a small one).
\set ON_ERROR_STOP on
create schema sales;
create schema inventory;
create schema hr;
create schema analytics;
comment on schema sales is 'orders and customers';

create table hr.departments (id int primary key, name text not null unique);
create table hr.employees (
    id int generated always as identity primary key,
    department_id int not null references hr.departments,
    name text not null,
    hired date not null,
    salary numeric(10, 2)
);
create table inventory.products (
    id bigint primary key,
    sku text not null unique,
    name text not null,
    price numeric(10, 2) not null,
    attrs jsonb
);
create table inventory.stock (
    product_id bigint not null references inventory.products,
    warehouse int not null,
    qty int not null check (qty >= 0),
    primary key (product_id, warehouse)
);
create type sales.order_status as enum ('new', 'paid', 'shipped', 'returned');
create table sales.customers (
    id bigint primary key,
    email text not null unique,
    name text not null,
    created_at timestamptz not null
);
create table sales.orders (
    id bigint primary key,
    customer_id bigint not null references sales.customers,
    placed_at timestamptz not null,
    status sales.order_status not null,
    total numeric(12, 2) not null
);
create table sales.order_lines (
    order_id bigint not null references sales.orders,
    line int not null,
    product_id bigint not null references inventory.products,
    qty int not null,
    price numeric(10, 2) not null,
    primary key (order_id, line)
);
create sequence sales.invoice_seq;

insert into hr.departments select g, 'department ' || g from generate_series(1, 20) g;
insert into hr.employees (department_id, name, hired, salary)
select 1 + g % 20, 'employee ' || g, date '2015-01-01' + g % 3000, 30000 + g % 50000
from generate_series(1, (2000 * :scale)::int) g;
insert into inventory.products
select g, 'SKU-' || g, 'product ' || g, (g % 500) + 0.99, jsonb_build_object('color', g % 7, 'size', g % 5)
from generate_series(1, (20000 * :scale)::int) g;
insert into inventory.stock select p, w, (p * w) % 100 from generate_series(1, (20000 * :scale)::int) p, generate_series(1, 3) w;
insert into sales.customers
select g, 'customer' || g || '@example.com', 'customer ' || g, timestamptz '2020-01-01' + g * interval '5 minutes'
from generate_series(1, (100000 * :scale)::int) g;
insert into sales.orders
select g, 1 + g % (100000 * :scale)::int, timestamptz '2021-01-01' + g * interval '1 minute',
       (array['new', 'paid', 'shipped', 'returned']::sales.order_status[])[1 + g % 4], (g % 1000) + 0.5
from generate_series(1, (500000 * :scale)::int) g;
insert into sales.order_lines
select o, l, 1 + (o * l) % (20000 * :scale)::int, 1 + l, ((o + l) % 300) + 0.25
from generate_series(1, (500000 * :scale)::int) o, generate_series(1, 3) l;
create index orders_customer_idx on sales.orders (customer_id);
create index orders_placed_idx on sales.orders (placed_at);
create index order_lines_product_idx on sales.order_lines (product_id);
select setval('sales.invoice_seq', 4242);

create materialized view analytics.daily_revenue as
    select date_trunc('day', placed_at) as day, count(*) as orders, sum(total) as revenue
    from sales.orders group by 1;
create unique index daily_revenue_day on analytics.daily_revenue (day);
select lo_from_bytea(0, convert_to('the shop''s terms and conditions', 'UTF8'));
analyze;
