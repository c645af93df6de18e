-- Every user relation of the current database with no more than the copy needs to match
-- catalog objects to pg_dump's entries: OID, schema, name, kind, the table owning a sequence
-- (identity or OWNED BY), and the tables a table inherits from (or is a partition of).
select u.oid::int8 as oid,
       u.nspname as schema,
       u.relname as name,
       u.relkind::text as kind,
       (select d.refobjid::int8
          from pg_catalog.pg_depend d
         where u.relkind = 'S'
           and d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass and d.objid = u.oid
           and d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass and d.deptype in ('a', 'i')
         limit 1) as owned_by,
       array(select i.inhparent::int8 from pg_catalog.pg_inherits i where i.inhrelid = u.oid) as parents
  from ({user_relations}) u
