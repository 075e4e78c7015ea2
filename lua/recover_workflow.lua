-- recover_workflow: enqueue the messages a stalled workflow's state needs, if the workflow has
-- not changed since it was found stalled and this version was not just recovered.
--
-- KEYS[1] workflow hash     KEYS[3] delayed set            KEYS[5] recovery guard (string)
-- KEYS[2] ready stream      KEYS[4] delayed payloads hash
--
-- ARGV[1] the workflow version (`ver`) the caller found stalled
-- ARGV[2] recovery guard time to live (ms)
-- ARGV[3 ..] message id, payload pairs to enqueue on the ready stream
--
-- Returns:
--   {1}    enqueued; the guard now holds ARGV[1] for ARGV[2] ms
--   {0}    the workflow changed meanwhile (`ver` moved): nothing enqueued
--   {-1}   the workflow hash is gone: nothing enqueued
--   {-2}   this version was recovered within the guard's lifetime: nothing enqueued
-- Events: none.

--@include includes/enqueue.lua

local wf, ready, delayed, payloads, guard = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local expected, ttl = ARGV[1], tonumber(ARGV[2])

local ver = redis.call('HGET', wf, K.ver)
if not ver then
  return {-1}
end
if tonumber(ver) ~= tonumber(expected) then
  return {0}
end
if redis.call('GET', guard) == ver then
  return {-2}
end
local now = now_ms()
for i = 3, #ARGV, 2 do
  enqueue(ready, delayed, payloads, ARGV[i], ARGV[i + 1], 0, now)
end
redis.call('SET', guard, ver, 'PX', ttl)
return {1}
