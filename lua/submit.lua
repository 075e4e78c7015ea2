-- submit: store a new workflow and, optionally, enqueue the message that starts it.
--
-- KEYS[1] workflow hash     KEYS[4] delayed payloads hash
-- KEYS[2] ready stream      KEYS[5] partition workflow index (zset: id -> submitted at)
-- KEYS[3] delayed set       KEYS[6] dirty set
--                           KEYS[7] workflow event stream
-- ARGV[1] workflow id
-- ARGV[2] mode: 'new' (fail if it exists), 'start' (store if absent, then enqueue the message)
-- ARGV[3] start message id ('' for none)   ARGV[4] start message payload
-- ARGV[5] event JSON ('' for none)
-- ARGV[6..] field, value pairs of the workflow hash (field versions start at 1; the workflow
--           version `ver` starts at 1 and every later commit that writes bumps it)
--
-- Returns:
--   {1}  stored (and the message enqueued if given)
--   {2}  already stored; mode 'start' enqueued the message anyway (StartWorkflow is guarded)
--   {0}  already stored; mode 'new' wrote nothing
-- Events: appends ARGV[5] to the workflow's event stream when the workflow is stored.

--@include includes/enqueue.lua

local wf, ready, delayed, payloads, index, dirty, events =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local id, mode, msg_id, msg = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now = now_ms()

local exists = redis.call('EXISTS', wf) == 1
if exists and mode == 'new' then
  return {0}
end

if not exists then
  for i = 6, #ARGV, 2 do
    redis.call('HSET', wf, ARGV[i], ARGV[i + 1], 'v:' .. ARGV[i], 1)
  end
  redis.call('HSET', wf, 'ver', 1)
  redis.call('ZADD', index, now, id)
  redis.call('ZADD', dirty, 'NX', now, id)
  if ARGV[5] ~= '' then
    redis.call('XADD', events, '*', 'e', ARGV[5])
  end
end

if msg_id ~= '' then
  enqueue(ready, delayed, payloads, msg_id, msg, 0, now)
end
if exists then
  return {2}
end
return {1}
