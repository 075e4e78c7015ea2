-- dead_letter: move a delivered entry to the dead-letter stream, atomically with its ack.
--
-- KEYS[1] ready stream the entry was read from   KEYS[2] dead-letter stream of that partition
-- KEYS[3] windowed dedup record of that partition (zset: message id -> processed at)
-- KEYS[4] dedup record of the message's workflow, when it lives in that partition (else any
--         key of the partition that does not exist)
-- ARGV[1] delivered entry id ('' when there is no stream entry to ack)
-- ARGV[2] consumer group   ARGV[3] message id ('' if unknown)
-- ARGV[4] raw payload   ARGV[5] reason   ARGV[6] attempts   ARGV[7] last error
-- ARGV[8] '1': a message whose id is already in either record is a redelivered duplicate of
--         a processed message; it is only acked, not dead-lettered. '0': no such check.
--
-- Returns 1 when dead-lettered, 0 when only acked (a duplicate).
-- Events: none (the dead-letter entry holds id, m, reason, attempts, error, at).

--@include includes/enqueue.lua

if ARGV[8] == '1' and ARGV[3] ~= ''
    and (redis.call('ZSCORE', KEYS[4], ARGV[3]) or redis.call('ZSCORE', KEYS[3], ARGV[3])) then
  ack(KEYS[1], ARGV[2], ARGV[1])
  return 0
end
local now = now_ms()
dead_letter(KEYS[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], now)
ack(KEYS[1], ARGV[2], ARGV[1])
return 1
