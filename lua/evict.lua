-- evict: remove a finished workflow from Redis once Postgres holds its latest state.
--
-- KEYS[1] workflow hash     KEYS[3] partition workflow index (zset)
-- KEYS[2] workflow event stream     KEYS[4] dirty set
-- KEYS[5] the workflow's dedup record (zset)
-- ARGV[1] workflow id
-- ARGV[2] version the caller saw (with an end time past the retention period)
-- ARGV[3] statuses that may be evicted (the complete ones), as ',NAME,NAME,'
--
-- Deletes the hash, the event stream, the dedup record and the index entry only when, all at once: the status
-- is in ARGV[3], `ver` equals ARGV[2], the checkpointed version `ckpt` equals `ver`, the
-- workflow is not dirty, and every event of the stream is archived (its last id <= `ckpt_ev`).
-- A workflow whose stream has unarchived events is marked dirty so the checkpointer takes them.
--
-- Returns:
--   {1}          evicted
--   {0, reason}  kept; reason: 'gone', 'status', 'version', 'unsaved', 'dirty' or 'events'
-- Events: none (the workflow's event stream is deleted with it).

--@include includes/enqueue.lua
--@include includes/stream_ids.lua

local wf, events, index, dirty = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id, expected, statuses = ARGV[1], tonumber(ARGV[2]), ARGV[3]

local st, ver, ckpt, ckpt_ev = unpack(redis.call('HMGET', wf, K.status, K.ver, K.ckpt, K.ckpt_ev))
if not st then
  return {0, 'gone'}
end
if not string.find(statuses, ',' .. st .. ',', 1, true) then
  return {0, 'status'}
end
if tonumber(ver or '0') ~= expected then
  return {0, 'version'}
end
if tonumber(ckpt or '0') ~= expected then
  return {0, 'unsaved'}
end
if redis.call('ZSCORE', dirty, id) then
  return {0, 'dirty'}
end
local newest = redis.call('XREVRANGE', events, '+', '-', 'COUNT', 1)
if #newest > 0 and stream_id_gt(newest[1][1], ckpt_ev) then
  redis.call('ZADD', dirty, 'NX', now_ms(), id)
  return {0, 'events'}
end

redis.call('DEL', wf, events, KEYS[5])
redis.call('ZREM', index, id)
return {1}
