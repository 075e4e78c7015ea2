-- relay_deliver: enqueue, in its target partition, a message relayed from another partition's
-- outbox - once, however often it is forwarded.
--
-- KEYS[1] ready stream          KEYS[4] partition's windowed dedup record (zset: id -> at)
-- KEYS[2] delayed set           KEYS[5] inbox (zset: relayed message id -> relayed at)
-- KEYS[3] delayed payloads hash KEYS[6] the target workflow's dedup record (zset: id -> at)
--
-- ARGV[1] message id     ARGV[2] encoded message     ARGV[3] inbox window (ms): ids relayed
--                                                    longer ago than this are forgotten (the
--                                                    dedup window, STABILIZE_DEDUP_WINDOW_S)
--
-- A forward is repeated only when the relay crashed between forwarding and acknowledging its
-- outbox entry, and the entry is redelivered within the consumer group's visibility timeout
-- times its delivery limit - far inside the window.
--
-- Returns: 1 enqueued; 0 already relayed or already processed here (nothing written but the
-- window trim).
-- Events: none.

--@include includes/enqueue.lua

local ready, delayed, payloads, done, inbox, record = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local id, payload, window = ARGV[1], ARGV[2], tonumber(ARGV[3])
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', inbox, '-inf', now - window)
if redis.call('ZSCORE', inbox, id) or redis.call('ZSCORE', record, id) or redis.call('ZSCORE', done, id) then
  return 0
end
enqueue(ready, delayed, payloads, id, payload, 0, now)
redis.call('ZADD', inbox, now, id)
return 1
