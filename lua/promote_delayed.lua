-- promote_delayed: move due delayed messages to the ready stream; trim the dedup record.
--
-- KEYS[1] delayed set    KEYS[3] ready stream
-- KEYS[2] delayed payloads hash    KEYS[4] dedup record
-- ARGV[1] max messages to move     ARGV[2] dedup retention (ms); records older are trimmed
--
-- Returns {moved, next_due_ms} where next_due_ms is the due time of the earliest message
-- still delayed, or -1 when none is.
-- Events: none.

--@include includes/enqueue.lua

local delayed, payloads, ready, done = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
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

local next_due = -1
local first = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
if #first > 0 then
  next_due = tonumber(first[2])
end
return {#due, next_due}
