-- replay_dead: move one dead-letter entry back to the ready stream with its attempts reset.
--
-- KEYS[1] dead-letter stream   KEYS[2] ready stream
-- ARGV[1] dead-letter entry id   ARGV[2] payload to enqueue (attempts reset by the caller)
-- ARGV[3] message id
--
-- Returns 1 when replayed, 0 when the entry no longer exists.
-- Events: none.

local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then
  return 0
end
redis.call('XADD', KEYS[2], '*', K.entry_id, ARGV[3], K.payload, ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[1])
return 1
