-- dead_letter: move a delivered entry to the dead-letter stream, atomically with its ack.
--
-- KEYS[1] ready stream   KEYS[2] dead-letter stream
-- ARGV[1] delivered entry id   ARGV[2] consumer group   ARGV[3] message id ('' if unknown)
-- ARGV[4] raw payload   ARGV[5] reason   ARGV[6] attempts   ARGV[7] last error
--
-- Returns 1.
-- Events: none (the dead-letter entry holds id, m, reason, attempts, error, at).

--@include includes/enqueue.lua

local now = now_ms()
dead_letter(KEYS[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], now)
ack(KEYS[1], ARGV[2], ARGV[1])
return 1
