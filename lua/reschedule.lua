-- reschedule: hand a message whose handler failed back to the queue after a delay, or
-- dead-letter it once it has used its attempts. Atomic with the ack of the delivered entry.
--
-- KEYS[1] ready stream   KEYS[3] delayed payloads hash
-- KEYS[2] delayed set    KEYS[4] dead-letter stream
-- ARGV[1] delivered entry id   ARGV[2] consumer group   ARGV[3] message id
-- ARGV[4] payload to enqueue (its attempt count already raised)
-- ARGV[5] delay (ms)   ARGV[6] attempts so far   ARGV[7] max attempts   ARGV[8] last error
--
-- Returns 1 when rescheduled, 2 when dead-lettered.
-- Events: none (the dead-letter stream entry records reason 'max_attempts' and the error).

--@include includes/enqueue.lua

local ready, delayed, payloads, dead = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now = now_ms()
local attempts, max_attempts = tonumber(ARGV[6]), tonumber(ARGV[7])
ack(ready, ARGV[2], ARGV[1])
if attempts >= max_attempts then
  dead_letter(dead, ARGV[3], ARGV[4], 'max_attempts', attempts, ARGV[8], now)
  return 2
end
enqueue(ready, delayed, payloads, ARGV[3], ARGV[4], tonumber(ARGV[5]), now)
return 1
