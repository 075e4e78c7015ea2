-- dirty_trim: bound one partition's dirty set while no checkpointer drains it.
--
-- KEYS[1] the partition's dirty set (workflow id -> ms of its first unsaved change)
-- KEYS[2] the partition's trimmed marker (a counter)
-- ARGV[1] maximum age (ms): older marks are dropped (0: no age bound)
-- ARGV[2] maximum size: the oldest marks beyond it are dropped (negative: no size bound)
-- ARGV[3] at most this many marks are dropped by one call (the caller calls again)
--
-- Drops the oldest marks first. When it drops any, it increments the marker: a checkpointer
-- that holds the partition later re-marks every workflow not saved in PostgreSQL
-- (lua/dirty_remark.lua), so no workflow is left unsaved because of a trim.
-- Returns {dropped, excess still left}.
-- Events: none.

--@include includes/enqueue.lua

local dirty, marker = KEYS[1], KEYS[2]
local max_age, max_size, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])

local excess = 0
if max_age > 0 then
  excess = redis.call('ZCOUNT', dirty, '-inf', '(' .. (now_ms() - max_age))
end
if max_size >= 0 then
  local over = redis.call('ZCARD', dirty) - max_size
  if over > excess then
    excess = over
  end
end
local n = math.min(excess, limit)
if n <= 0 then
  return {0, 0}
end
redis.call('ZREMRANGEBYRANK', dirty, 0, n - 1)
redis.call('INCR', marker)
return {n, excess - n}
