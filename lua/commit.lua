-- commit: apply one state transition of one workflow atomically.
--
-- KEYS[1] workflow hash          KEYS[5] dedup record (zset: message id -> processed at)
-- KEYS[2] ready stream           KEYS[6] dirty set (zset: workflow id -> first change)
-- KEYS[3] delayed set            KEYS[7] workflow event stream
-- KEYS[4] delayed payloads hash
--
-- ARGV[1] JSON plan:
--   m   message id being processed ('' for none)       e  delivered stream entry id ('' for none)
--   g   consumer group                                  wf workflow id (for the dirty mark)
--   c   [[field, version], ...]    read set: each field's version must still equal `version`
--   cv  [[field, value], ...]      read set of counters: each must still hold `value`
--   w   [[field, argv_index], ...] write set: HSET field to ARGV[argv_index], bump v:<field>
--   x   [field, ...]               fields to delete (with their versions)
--   n   [[field, incr, threshold, q_index], ...] counters: HINCRBY; when the new value equals
--       threshold, enqueue plan.q_release[q_index]
--   q   [[msg_id, argv_index, delay_ms], ...] messages to enqueue
--   r   [[msg_id, argv_index, delay_ms], ...] messages released by counters (q_release)
--   ev  [argv_index, ...]          events (JSON) to append to the workflow's event stream
--   p   [[channel, text], ...]     notifications to PUBLISH after the writes (cancellations)
-- ARGV[2..] blobs referenced by index.
--
-- Steps, in order: dedup -> version checks -> writes -> counters -> enqueue -> events ->
-- workflow version bump (field `ver`) + dirty mark -> dedup record + XACK/XDEL of the entry.
--
-- Returns:
--   {1, released}   committed; released = number of counter-released messages
--   {0}             DUPLICATE: message already processed; entry acked, nothing written
--   {-1, field}     CONFLICT: `field` changed since it was read; nothing written, not acked
--
-- Events: appends plan.ev entries to KEYS[7] as {e = <json>}; publishes plan.p.

--@include includes/enqueue.lua

local plan = cjson.decode(ARGV[1])
local wf, ready, delayed, payloads, done, dirty, events =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]

if plan.m ~= '' and redis.call('ZSCORE', done, plan.m) then
  ack(ready, plan.g, plan.e)
  return {0}
end

for _, check in ipairs(plan.c) do
  local v = tonumber(redis.call('HGET', wf, 'v:' .. check[1]) or '0')
  if v ~= tonumber(check[2]) then
    return {-1, check[1]}
  end
end
for _, check in ipairs(plan.cv) do
  local v = tonumber(redis.call('HGET', wf, check[1]) or '0')
  if v ~= tonumber(check[2]) then
    return {-1, check[1]}
  end
end

local now = now_ms()

for _, w in ipairs(plan.w) do
  redis.call('HSET', wf, w[1], ARGV[w[2]])
  redis.call('HINCRBY', wf, 'v:' .. w[1], 1)
end

for _, f in ipairs(plan.x) do
  redis.call('HDEL', wf, f, 'v:' .. f)
end

local released = 0
for _, n in ipairs(plan.n) do
  local value = redis.call('HINCRBY', wf, n[1], n[2])
  if n[4] > 0 and value == tonumber(n[3]) then
    local msg = plan.r[n[4]]
    enqueue(ready, delayed, payloads, msg[1], ARGV[msg[2]], tonumber(msg[3]), now)
    released = released + 1
  end
end

for _, msg in ipairs(plan.q) do
  enqueue(ready, delayed, payloads, msg[1], ARGV[msg[2]], tonumber(msg[3]), now)
end

for _, idx in ipairs(plan.ev) do
  redis.call('XADD', events, '*', 'e', ARGV[idx])
end

for _, note in ipairs(plan.p) do
  redis.call('PUBLISH', note[1], note[2])
end

if #plan.w > 0 or #plan.n > 0 or #plan.x > 0 then
  redis.call('HINCRBY', wf, 'ver', 1)
  redis.call('ZADD', dirty, 'NX', now, plan.wf)
end

if plan.m ~= '' then
  redis.call('ZADD', done, now, plan.m)
end
ack(ready, plan.g, plan.e)
return {1, released}
