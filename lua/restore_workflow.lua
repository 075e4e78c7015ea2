-- restore_workflow: reload one workflow from its Postgres snapshot and enqueue the messages its
-- state needs, unless Redis already holds the same or a newer version of it.
--
-- KEYS[1] workflow hash            KEYS[5] delayed payloads hash
-- KEYS[2] workflow event stream    KEYS[6] partition workflow index (zset: id -> submitted at)
-- KEYS[3] ready stream             KEYS[7] dirty set
-- KEYS[4] delayed set              KEYS[8] recovery guard (string: version last recovered)
--
-- ARGV[1] workflow id
-- ARGV[2] snapshot version (the `ver` the snapshot was read at)
-- ARGV[3] index score (ms) used if the workflow is not in the partition index
-- ARGV[4] recovery guard time to live (ms)
-- ARGV[5] N, the number of hash fields in the snapshot
-- ARGV[6 .. 5+2N] field, value pairs of the snapshot
-- ARGV[6+2N ..] message id, payload pairs to enqueue on the ready stream
--
-- Writes only when the hash is absent or its `ver` is older than ARGV[2]. Then, in one step: an
-- older copy and its event stream are deleted (Postgres holds every event up to the snapshot),
-- the snapshot's fields are written, `ckpt` is set to ARGV[2] (that version is in Postgres),
-- the workflow is (re-)added to the partition index and marked dirty, the messages are
-- enqueued and the recovery guard is set to ARGV[2], so restoring twice never enqueues twice.
--
-- Returns:
--   {1, previous}  restored; previous = the version Redis held before, or -1 for none
--   {0, current}   skipped: Redis holds version `current` >= ARGV[2]
-- Events: none (the snapshot's history is in Postgres; new events start a new stream).

--@include includes/enqueue.lua

local wf, events, ready, delayed, payloads, index, dirty, guard =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local id, version, score, ttl, n = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])

local current = redis.call('HGET', wf, K.ver)
if current and tonumber(current) >= version then
  return {0, tonumber(current)}
end

redis.call('DEL', wf, events)
for i = 6, 5 + 2 * n, 2 do
  redis.call('HSET', wf, ARGV[i], ARGV[i + 1])
end
redis.call('HSET', wf, K.ver, version, K.ckpt, version)
redis.call('ZADD', index, 'NX', score, id)
local now = now_ms()
redis.call('ZADD', dirty, 'NX', now, id)
for i = 6 + 2 * n, #ARGV, 2 do
  enqueue(ready, delayed, payloads, ARGV[i], ARGV[i + 1], 0, now)
end
redis.call('SET', guard, version, 'PX', ttl)
return {1, tonumber(current or '-1')}
