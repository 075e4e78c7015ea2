-- dirty_remark: after a trim, mark dirty again the workflows of one page of a partition whose
-- latest state or events are not in PostgreSQL, so that a checkpointer saves them.
--
-- KEYS[1] the partition's dirty set     KEYS[2] the partition's trimmed marker
-- KEYS[3] the partition's quarantine hash (workflows PostgreSQL refused: left alone)
-- KEYS[2+2k], KEYS[3+2k] hash and event stream of the k-th workflow (k = 1..n)
-- ARGV[1] the marker's value when the scan began
-- ARGV[2] '1' when this page is the scan's last, else '0'
-- ARGV[2+k] id of the k-th workflow
--
-- A workflow is marked (ZADD NX, scored now) when its hash exists, it is not in quarantine
-- (its next change marks it), and either its checkpointed version `ckpt` is below `ver` or its
-- event stream has an entry after `ckpt_ev`. On the last
-- page the marker is deleted if it still holds ARGV[1]; a trim during the scan changed it, and
-- the scan then runs again.
-- Returns {workflows marked, 1 if the marker was deleted else 0}.
-- Events: none.

--@include includes/enqueue.lua
--@include includes/stream_ids.lua

local dirty, marker, quarantine = KEYS[1], KEYS[2], KEYS[3]
local started, last_page = ARGV[1], ARGV[2]
local now = now_ms()
local marked = 0

for k = 1, #ARGV - 2 do
  local id, wf, events = ARGV[2 + k], KEYS[2 + 2 * k], KEYS[3 + 2 * k]
  local ver, ckpt, ckpt_ev = unpack(redis.call('HMGET', wf, K.ver, K.ckpt, K.ckpt_ev))
  if ver and redis.call('HEXISTS', quarantine, id) == 0 then
    local unsaved = tonumber(ckpt or '0') < tonumber(ver)
    if not unsaved then
      local newest = redis.call('XREVRANGE', events, '+', '-', 'COUNT', 1)
      unsaved = #newest > 0 and stream_id_gt(newest[1][1], ckpt_ev)
    end
    if unsaved then
      marked = marked + redis.call('ZADD', dirty, 'NX', now, id)
    end
  end
end

local cleared = 0
if last_page == '1' and redis.call('GET', marker) == started then
  redis.call('DEL', marker)
  cleared = 1
end
return {marked, cleared}
