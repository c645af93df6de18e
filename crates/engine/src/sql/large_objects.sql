-- Large objects in an OID range, with owner, comment and grants (as statements the
-- source server quotes).
select l.oid,
       pg_catalog.pg_get_userbyid(l.lomowner) as owner,
       pg_catalog.obj_description(l.oid, 'pg_largeobject') as comment,
       l.lomacl is not null as has_acl,
       array(select pg_catalog.format('grant %s on large object %s to %s%s',
                                      a.privilege_type, l.oid,
                                      case when a.grantee = 0 then 'public'
                                           else pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(a.grantee)) end,
                                      case when a.is_grantable then ' with grant option' else '' end)
               from pg_catalog.aclexplode(l.lomacl) a
              where a.grantee <> l.lomowner) as grants
from pg_catalog.pg_largeobject_metadata l
where l.oid between $1 and $2
order by l.oid
