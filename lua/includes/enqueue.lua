-- includes/enqueue.lua: helpers shared by the commands that include them
-- (`--@include includes/enqueue.lua`). No KEYS or ARGV of its own: every function takes the
-- key names it touches as arguments, and the including script passes them in its KEYS.
-- Returns: see each function. Events: none.
-- Shared helper: put one encoded message on a partition's queue.
-- enqueue(ready, delayed, payloads, msg_id, payload, delay_ms, now_ms)
--   delay_ms <= 0: XADD to the ready stream (fields: id, m)
--   delay_ms  > 0: ZADD the id to the delayed set scored by due time, payload kept in a hash
local function enqueue(ready, delayed, payloads, msg_id, payload, delay_ms, now_ms)
  if delay_ms <= 0 then
    redis.call('XADD', ready, '*', K.entry_id, msg_id, K.payload, payload)
  else
    redis.call('HSET', payloads, msg_id, payload)
    redis.call('ZADD', delayed, now_ms + delay_ms, msg_id)
  end
end

-- Milliseconds since the epoch, from the server clock (one clock for every machine).
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Acknowledge and delete a delivered stream entry; a no-op for an empty entry id.
local function ack(ready, group, entry_id)
  if entry_id ~= nil and entry_id ~= '' then
    redis.call('XACK', ready, group, entry_id)
    redis.call('XDEL', ready, entry_id)
  end
end

-- Move a message to the dead-letter stream with why, how often it was tried and its last error.
local function dead_letter(dead, msg_id, payload, reason, attempts, last_error, now)
  redis.call('XADD', dead, '*', K.entry_id, msg_id, K.payload, payload, K.dead_reason, reason,
    K.dead_attempts, attempts, K.dead_error, last_error, K.dead_at, now)
end
