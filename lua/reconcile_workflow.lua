-- reconcile_workflow: after a Redis rollback, make the checkpointer rewrite a workflow whose
-- PostgreSQL snapshot is ahead of (or differs from) Redis, and record why in its event stream
-- (durability/reconcile.py).
--
-- KEYS[1] workflow hash     KEYS[2] the partition's dirty set     KEYS[3] workflow event stream
-- ARGV[1] workflow id
-- ARGV[2] event JSON to append ('' for none): the `workflow.reconciled` report
--
-- Only when the hash exists: the workflow is marked dirty (ZADD NX: an older mark keeps its
-- age) and the event is appended.
--
-- Returns 1 marked (and reported), 0 the hash is gone (nothing written).
-- Events: ARGV[2] as {e = <json>}.

--@include includes/enqueue.lua

local wf, dirty, events = KEYS[1], KEYS[2], KEYS[3]
local id, event = ARGV[1], ARGV[2]
if redis.call('EXISTS', wf) == 0 then
  return 0
end
redis.call('ZADD', dirty, 'NX', now_ms(), id)
if event ~= '' then
  redis.call('XADD', events, '*', K.event, event)
end
return 1
