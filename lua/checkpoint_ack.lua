-- checkpoint_ack: after Postgres committed a batch of one partition (snapshots and events),
-- record that in each workflow hash and clear the dirty marks of the workflows that did not
-- change since they were read. One call per partition batch.
--
-- KEYS[1] the partition's dirty set     KEYS[2] the partition's checkpoint info hash
-- KEYS[2+k] hash of the k-th workflow (k = 1..n)
-- ARGV[1] server time (ms) at which the batch was read
-- ARGV[2] owner token of the checkpointer (recorded in the info hash)
-- ARGV[3+4(k-1)] .. ARGV[6+4(k-1)], for the k-th workflow:
--   id; version written to Postgres (0: its hash was gone); stream id of the last event
--   archived ('' for none); '1' if events beyond it remain to be archived, else '0'
--
-- Per workflow: `ckpt` = max(ckpt, version) and `ckpt_ev` = max(ckpt_ev, last event). The dirty
-- mark is removed only when `ver` still equals the version written (a compare: a commit that
-- landed after the read keeps the workflow dirty) and no events remain. A workflow left dirty
-- gets its score raised to the read time (ZADD XX GT): everything before the read is in
-- Postgres, so its oldest unsaved change is no older than that.
-- Info hash: at = now (ms), by = owner, workflows += number of snapshots acknowledged.
--
-- Returns {c_1, ..., c_n}: 1 checkpointed (mark cleared), 0 changed since the read or events
-- pending (still dirty), -1 the hash is gone (mark dropped).
-- Events: none.

--@include includes/enqueue.lua
--@include includes/stream_ids.lua

local dirty, info = KEYS[1], KEYS[2]
local read_ms, owner = ARGV[1], ARGV[2]
local out = {}
local saved = 0

for k = 1, #KEYS - 2 do
  local wf = KEYS[2 + k]
  local base = 3 + 4 * (k - 1)
  local id, version, last_event, more = ARGV[base], tonumber(ARGV[base + 1]), ARGV[base + 2], ARGV[base + 3]
  local code = 0
  if redis.call('EXISTS', wf) == 0 then
    redis.call('ZREM', dirty, id)
    code = -1
  else
    if version > 0 then
      saved = saved + 1
    end
    if version > tonumber(redis.call('HGET', wf, 'ckpt') or '0') then
      redis.call('HSET', wf, 'ckpt', version)
    end
    if last_event ~= '' and stream_id_gt(last_event, redis.call('HGET', wf, 'ckpt_ev')) then
      redis.call('HSET', wf, 'ckpt_ev', last_event)
    end
    if more ~= '1' then
      if tonumber(redis.call('HGET', wf, 'ver') or '0') == version then
        redis.call('ZREM', dirty, id)
        code = 1
      else
        redis.call('ZADD', dirty, 'XX', 'GT', read_ms, id)
      end
    end
  end
  out[k] = code
end

redis.call('HSET', info, 'at', now_ms(), 'by', owner)
redis.call('HINCRBY', info, 'workflows', saved)
return out
