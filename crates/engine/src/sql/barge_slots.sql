-- barge's logical replication slots on a server, whichever sync made them.
select slot_name::text, active
from pg_catalog.pg_replication_slots
where slot_name like 'barge\_%' and slot_type = 'logical'
order by 1
