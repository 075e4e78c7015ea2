-- promote_delayed: move due delayed messages to the ready stream; trim the windowed dedup
-- record; forget finished workflows whose keys expired.
--
-- KEYS[1] delayed set    KEYS[3] ready stream         KEYS[5] expiring set (id -> due ms)
-- KEYS[2] delayed payloads hash    KEYS[4] windowed dedup record
--                                  KEYS[6] workflow index   KEYS[7] dirty set
-- ARGV[1] max messages to move (and expired workflows to forget)
-- ARGV[2] dedup window (ms); records older are trimmed
--
-- A workflow in KEYS[5] whose due time passed had its hash, events and dedup record expire
-- (``lua/commit.lua``, plan.ft): its id leaves KEYS[5], KEYS[6] and KEYS[7].
--
-- Returns {moved, next_due_ms} where next_due_ms is the due time of the earliest message
-- still delayed, or -1 when none is.
-- Events: none.

--@include includes/enqueue.lua

local delayed, payloads, ready, done, expiring = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, msg_id in ipairs(due) do
  local payload = redis.call('HGET', payloads, msg_id)
  if payload then
    enqueue(ready, delayed, payloads, msg_id, payload, 0, now)
    redis.call('HDEL', payloads, msg_id)
  end
  redis.call('ZREM', delayed, msg_id)
end

redis.call('ZREMRANGEBYSCORE', done, '-inf', now - tonumber(ARGV[2]))
for _, id in ipairs(redis.call('ZRANGEBYSCORE', expiring, '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))) do
  redis.call('ZREM', expiring, id)
  redis.call('ZREM', KEYS[6], id)
  redis.call('ZREM', KEYS[7], id)
end

local next_due = -1
local first = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
if #first > 0 then
  next_due = tonumber(first[2])
end
return {#due, next_due}
