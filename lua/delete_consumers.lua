-- delete_consumers: delete the consumers of one stream's group that hold no pending entry and
-- have been idle at least a given time. XGROUP DELCONSUMER drops whatever a consumer still has
-- pending; checking and deleting in one script guarantees no pending entry is ever dropped.
--
-- KEYS[1] ready stream
-- ARGV[1] consumer group
-- ARGV[2] minimum idle time (ms) of a consumer to delete
-- ARGV[3] only this consumer ('' = any consumer)
--
-- Returns the number of consumers deleted (0 when the stream or its group does not exist).
-- Events: none.

local stream, group, min_idle, only = KEYS[1], ARGV[1], tonumber(ARGV[2]), ARGV[3]
if redis.call('EXISTS', stream) == 0 then
  return 0
end
local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', stream, group)
if not ok then
  return 0
end

local deleted = 0
for _, consumer in ipairs(consumers) do
  local info = {}
  for i = 1, #consumer, 2 do
    info[consumer[i]] = consumer[i + 1]
  end
  if (only == '' or info['name'] == only) and tonumber(info['pending']) == 0
      and tonumber(info['idle']) >= min_idle then
    redis.call('XGROUP', 'DELCONSUMER', stream, group, info['name'])
    deleted = deleted + 1
  end
end
return deleted
