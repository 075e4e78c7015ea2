-- hand_back: give a delivered entry back to its stream, for another consumer to take.
--
-- KEYS[1] the partition's ready stream
-- ARGV[1] consumer group
-- ARGV[2] id of an entry pending for the calling consumer
--
-- A worker that read more entries than it has free handler slots (XREADGROUP's COUNT is per
-- stream) hands the surplus back at once instead of holding it: the entry's fields are appended
-- again as a new entry at the stream's tail (same message id and payload, so the dedup record
-- still makes it run once) and the old entry is acknowledged and deleted, in one script - a
-- worker blocked on the stream wakes for it. An entry no longer in the stream is left alone.
-- Returns the new entry id, or false when the entry was not found.
-- Events: none.

local ready, group, id = KEYS[1], ARGV[1], ARGV[2]
local found = redis.call('XRANGE', ready, id, id)
if #found == 0 then
  return false
end
local new_id = redis.call('XADD', ready, '*', unpack(found[1][2]))
redis.call('XACK', ready, group, id)
redis.call('XDEL', ready, id)
return new_id
