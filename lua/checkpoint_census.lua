-- checkpoint_census: the live checkpointers of a namespace, so they share the partitions.
--
-- KEYS[1] census hash (owner token -> last seen, ms, server clock)
-- ARGV[1] 'join' (record this owner as alive now) or 'leave' (remove it)
-- ARGV[2] owner token
-- ARGV[3] time to live (ms): members not seen for longer are removed
--
-- Returns the number of live members after the operation.
-- Events: none.

--@include includes/enqueue.lua

local census, op, owner, ttl = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3])
local now = now_ms()

if op == 'join' then
  redis.call('HSET', census, owner, now)
else
  redis.call('HDEL', census, owner)
end

local live = 0
local members = redis.call('HGETALL', census)
for i = 1, #members, 2 do
  if tonumber(members[i + 1]) < now - ttl then
    redis.call('HDEL', census, members[i])
  else
    live = live + 1
  end
end
return live
