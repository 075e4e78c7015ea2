-- checkpoint_ack: after Postgres committed a batch of one partition (snapshots and events),
-- record that in each workflow hash and clear the dirty marks of the workflows that did not
-- change since they were read; put the workflows Postgres refused in quarantine. One call per
-- partition batch.
--
-- KEYS[1] the partition's dirty set     KEYS[2] the partition's checkpoint info hash
-- KEYS[3] the partition's quarantine hash (workflow id -> JSON reason)
-- KEYS[3+k] hash of the k-th workflow (k = 1..n)   KEYS[3+n+k] event stream of the k-th workflow
-- ARGV[1] server time (ms) at which the batch was read
-- ARGV[2] owner token of the checkpointer (recorded in the info hash)
-- ARGV[3+5(k-1)] .. ARGV[7+5(k-1)], for the k-th workflow:
--   id; version written to Postgres (0: its hash was gone); stream id of the last event
--   archived ('' for none); '1' if events beyond it remain to be archived, else '0';
--   quarantine reason as JSON ('' when written)
--
-- Written workflow: `ckpt` = max(ckpt, version) and `ckpt_ev` = max(ckpt_ev, last event), and
-- any quarantine entry is removed; the event stream is trimmed to the entries after `ckpt_ev`
-- (XTRIM MINID): what PostgreSQL holds leaves Redis. The stream key stays, empty when all is
-- archived, so its last id still orders the next event after the archived ones; the time of
-- the newest archived event is `ckpt_ev`'s milliseconds. The dirty mark is removed only when `ver` still equals the
-- version written (a compare: a commit that landed after the read keeps the workflow dirty)
-- and no events remain. A workflow left dirty gets its score raised to the read time (ZADD XX
-- GT): everything before the read is in Postgres, so its oldest unsaved change is no older.
-- Quarantined workflow (reason given; version = the `ver` that was read): the reason is stored
-- in the quarantine hash, `ckpt`/`ckpt_ev` are left alone (nothing of it is in Postgres), and
-- the dirty mark is removed if `ver` did not move: its next commit marks it dirty again and it
-- is retried then.
-- A version above the hash's `ver` was read from a state this Redis no longer has (it restarted
-- from an older AOF between the read and this call): nothing of that workflow is touched.
-- Info hash: at = now (ms), by = owner, workflows += number of snapshots acknowledged.
--
-- Returns {c_1, ..., c_n}: 1 checkpointed (mark cleared), 0 changed since the read or events
-- pending (still dirty), -1 the hash is gone (mark dropped), 2 quarantined (mark cleared),
-- 3 quarantined but changed since the read (still dirty), -2 read from a state Redis lost.
-- Events: none.

--@include includes/enqueue.lua
--@include includes/stream_ids.lua

local dirty, info, quarantine = KEYS[1], KEYS[2], KEYS[3]
local read_ms, owner = ARGV[1], ARGV[2]
local out = {}
local saved = 0

local n = (#KEYS - 3) / 2
for k = 1, n do
  local wf, events = KEYS[3 + k], KEYS[3 + n + k]
  local base = 3 + 5 * (k - 1)
  local id, version, last_event, more, reason =
    ARGV[base], tonumber(ARGV[base + 1]), ARGV[base + 2], ARGV[base + 3], ARGV[base + 4]
  local code = 0
  local current = tonumber(redis.call('HGET', wf, K.ver) or '0')
  if redis.call('EXISTS', wf) == 0 then
    redis.call('ZREM', dirty, id)
    redis.call('HDEL', quarantine, id)
    code = -1
  elseif version > current then
    code = -2
  elseif reason ~= '' then
    redis.call('HSET', quarantine, id, reason)
    if current == version then
      redis.call('ZREM', dirty, id)
      code = 2
    else
      redis.call('ZADD', dirty, 'XX', 'GT', read_ms, id)
      code = 3
    end
  else
    if version > 0 then
      saved = saved + 1
      redis.call('HDEL', quarantine, id)
    end
    if version > tonumber(redis.call('HGET', wf, K.ckpt) or '0') then
      redis.call('HSET', wf, K.ckpt, version)
    end
    if last_event ~= '' and stream_id_gt(last_event, redis.call('HGET', wf, K.ckpt_ev)) then
      redis.call('HSET', wf, K.ckpt_ev, last_event)
    end
    local archived = redis.call('HGET', wf, K.ckpt_ev)
    if archived then
      local ms, seq = string.match(archived, '^(%d+)-(%d+)$')
      if ms then
        redis.call('XTRIM', events, 'MINID', ms .. '-' .. (tonumber(seq) + 1))
      end
    end
    if more ~= '1' then
      if current == version then
        redis.call('ZREM', dirty, id)
        code = 1
      else
        redis.call('ZADD', dirty, 'XX', 'GT', read_ms, id)
      end
    end
  end
  out[k] = code
end

redis.call('HSET', info, K.info_at, now_ms(), K.info_by, owner)
redis.call('HINCRBY', info, K.info_workflows, saved)
return out
