-- submit: store a new workflow and, optionally, enqueue the messages that start it.
--
-- KEYS[1] workflow hash     KEYS[4] delayed payloads hash
-- KEYS[2] ready stream      KEYS[5] partition workflow index (zset: id -> submitted at)
-- KEYS[3] delayed set       KEYS[6] dirty set
--                           KEYS[7] workflow event stream
-- ARGV[1] workflow id
-- ARGV[2] mode: 'new'    store; fail if it exists (nothing enqueued)
--               'start'  store if absent, then enqueue the messages either way (they are
--                        StartWorkflow, which acts only on a NOT_STARTED workflow)
--               'launch' store if absent and enqueue the messages only then
-- ARGV[3] JSON array of [message id, payload] to enqueue
-- ARGV[4] JSON array of event JSON texts, appended when the workflow is stored
-- ARGV[5..] field, value pairs of the workflow hash (field versions start at 1; the workflow
--           version `ver` starts at 1 and every later commit that writes bumps it)
--
-- Returns:
--   {1}  stored (and the messages enqueued)
--   {2}  already stored; mode 'start' enqueued the messages anyway
--   {0}  already stored; nothing written or enqueued
-- Events: the ARGV[4] events, when the workflow is stored.

--@include includes/enqueue.lua

local wf, ready, delayed, payloads, index, dirty, events =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local id, mode = ARGV[1], ARGV[2]
local messages, evs = cjson.decode(ARGV[3]), cjson.decode(ARGV[4])
local now = now_ms()

local exists = redis.call('EXISTS', wf) == 1
if exists and mode ~= 'start' then
  return {0}
end

if not exists then
  for i = 5, #ARGV, 2 do
    redis.call('HSET', wf, ARGV[i], ARGV[i + 1], K.v .. ARGV[i], 1)
  end
  redis.call('HSET', wf, K.ver, 1)
  redis.call('ZADD', index, now, id)
  redis.call('ZADD', dirty, 'NX', now, id)
  for _, e in ipairs(evs) do
    redis.call('XADD', events, '*', K.event, e)
  end
end

for _, msg in ipairs(messages) do
  enqueue(ready, delayed, payloads, msg[1], msg[2], 0, now)
end
if exists then
  return {2}
end
return {1}
