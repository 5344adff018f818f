DELETE FROM {queue} WHERE msg_id = ANY(%(msg_ids)s::bigint[])
