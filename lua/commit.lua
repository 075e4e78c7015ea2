-- commit: apply one state transition of one workflow atomically.
--
-- KEYS[1] workflow hash          KEYS[5] partition's windowed dedup record (zset: id -> at)
-- KEYS[2] ready stream           KEYS[6] dirty set (zset: workflow id -> first change)
-- KEYS[3] delayed set            KEYS[7] workflow event stream
-- KEYS[4] delayed payloads hash  KEYS[8] the workflow's dedup record (zset: id -> processed at)
--                                KEYS[9] partition's expiring set (zset: workflow id -> due ms)
--
-- ARGV[1] JSON plan:
--   m   message id being processed ('' for none)       e  delivered stream entry id ('' for none)
--   g   consumer group                                  wf workflow id (for the dirty mark)
--   c   [[field, version], ...]    read set: each field's version must still equal `version`
--   cv  [[field, value], ...]      read set of plain integers (counters, thresholds): each must
--                                  still hold `value` (a missing field holds 0)
--   w   [[field, argv_index], ...] write set: HSET field to ARGV[argv_index], bump v:<field>
--   x   [field, ...]               fields to delete (with their versions)
--   o   [[field, rank, argv_index], ...] publish stage outputs (``decisions.views``): in plain
--       field `field` (lines "<rank>\t<json>\n") drop the line of `rank`, then append
--       ARGV[argv_index] (0: nothing; an emptied field is deleted). No version.
--   z   [[field, value], ...]      reset: HSET plain integer fields (counters and their
--                                  thresholds) to absolute values
--   u   [stage_id, ...]            unsettle: for each stage whose settled flag is set, delete
--                                  the flag and take it off the settled (and halted) counts;
--                                  if any was set, the completion flag is deleted too. After
--                                  resets or unsettles (and with sr > 0), a settled count that
--                                  equals its threshold completes the workflow (see below)
--   n   [[field, threshold_field, incr, r_index], ...] counters: HINCRBY; when the new value
--       equals the integer stored in threshold_field, enqueue plan.r[r_index] (0: nothing)
--   s   [[stage_id, halted (0|1)], ...] settle top-level stages (see below)
--   cw  1 to request the workflow's completion now (a halt that ends it early)
--   sr  index in plan.r of the CompleteWorkflow released by completion (0: none, when the
--       decision completes the workflow itself)
--   k   field names for z/s/u/cw: settled, settled_t, halted (counters and threshold), flag,
--       dead, dead_t, down (prefixes taking a stage id), done (completion flag)
--   q   [[msg_id, argv_index, delay_ms], ...] messages to enqueue
--   r   [[msg_id, argv_index, delay_ms], ...] messages released by counters / completion
--   ev  [argv_index, ...]          events (JSON) to append to the workflow's event stream
--   p   [[channel, text], ...]     notifications to PUBLISH after the writes (cancellations)
--   nd  1 when KEYS[1] is not a workflow's hash (a concurrency limit's record): no dirty mark
--   mw  1 to record the message in the windowed record KEYS[5] even when the workflow exists
--       (marks of the store API, which ``is_message_processed`` finds without a workflow id,
--       and commits of a record that is not a workflow's, whose messages never leave with it)
--   el  > 0: cap the event stream at about this many entries (XADD MAXLEN ~); 0: no cap
--   ft  > 0: the workflow finished: KEYS[1], KEYS[7] and KEYS[8] expire in ft ms and the id is
--       put in KEYS[9] due then; -1: it runs again: their expiry is removed and the id taken
--       off KEYS[9]; absent or 0: expiry left as it is
-- ARGV[2..] blobs referenced by index.
--
-- Settling a stage sets its flag k.flag..id once (HSETNX: '1', or 'h' when halted); only a
-- stage newly flagged is counted in k.settled (and k.halted). A halted stage is a dead upstream
-- of each of its downstreams (k.down..id, space-separated): their k.dead counter goes up, and
-- one whose counter reaches its k.dead_t threshold can never start, so it is settled as halted
-- in turn (and so on down the graph). The commit that brings k.settled to its stored threshold
-- k.settled_t, or one with cw = 1, completes the workflow: if the completion flag k.done was
-- not set yet it is set and plan.r[sr] is enqueued - so CompleteWorkflow is released once.
--
-- Steps, in order: dedup -> checks -> writes -> deletes -> publications -> resets -> unsettles -> counters ->
-- settles -> completion -> enqueue -> events -> notifications -> workflow version bump (field
-- `ver`) + dirty mark -> dedup record + XACK/XDEL of the entry.
--
-- Dedup: a message is a DUPLICATE when its id is in the workflow's record KEYS[8] or in the
-- partition's windowed record KEYS[5]. It is recorded in KEYS[8] when the workflow hash exists
-- after the writes (so the id leaves with the workflow), else (and with plan.mw) in KEYS[5].
--
-- Returns:
--   {1, released}   committed; released = number of counter/completion-released messages
--   {0}             DUPLICATE: message already processed; entry acked, nothing written
--   {-1, field}     CONFLICT: `field` changed since it was read; nothing written, not acked
--
-- Events: appends plan.ev entries to KEYS[7] as {e = <json>}; publishes plan.p.

--@include includes/enqueue.lua

local plan = cjson.decode(ARGV[1])
local wf, ready, delayed, payloads, done, dirty, events, record =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]

if plan.m ~= '' and (redis.call('ZSCORE', record, plan.m) or redis.call('ZSCORE', done, plan.m)) then
  ack(ready, plan.g, plan.e)
  return {0}
end

for _, check in ipairs(plan.c) do
  local v = tonumber(redis.call('HGET', wf, K.v .. check[1]) or '0')
  if v ~= tonumber(check[2]) then
    return {-1, check[1]}
  end
end
for _, check in ipairs(plan.cv) do
  local v = tonumber(redis.call('HGET', wf, check[1]) or '0')
  if v ~= tonumber(check[2]) then
    return {-1, check[1]}
  end
end

local now = now_ms()
local released = 0
local function release(index)
  local msg = plan.r[index]
  enqueue(ready, delayed, payloads, msg[1], ARGV[msg[2]], tonumber(msg[3]), now)
  released = released + 1
end

for _, w in ipairs(plan.w) do
  redis.call('HSET', wf, w[1], ARGV[w[2]])
  redis.call('HINCRBY', wf, K.v .. w[1], 1)
end

for _, f in ipairs(plan.x) do
  redis.call('HDEL', wf, f, K.v .. f)
end

for _, o in ipairs(plan.o or {}) do
  local text = '\n' .. (redis.call('HGET', wf, o[1]) or '')
  local at = string.find(text, '\n' .. o[2] .. '\t', 1, true)
  if at then
    local stop = string.find(text, '\n', at + 1, true)
    text = string.sub(text, 1, at) .. string.sub(text, stop + 1)
  end
  if o[3] > 0 then
    text = text .. ARGV[o[3]]
  end
  if #text > 1 then
    redis.call('HSET', wf, o[1], string.sub(text, 2))
  else
    redis.call('HDEL', wf, o[1])
  end
end

local resets = plan.z or {}
for _, z in ipairs(resets) do
  redis.call('HSET', wf, z[1], z[2])
end

local k = plan.k
local unsettles = plan.u or {}
for _, sid in ipairs(unsettles) do
  local flag = redis.call('HGET', wf, k.flag .. sid)
  if flag then
    redis.call('HDEL', wf, k.flag .. sid)
    redis.call('HINCRBY', wf, k.settled, -1)
    if flag == 'h' then
      redis.call('HINCRBY', wf, k.halted, -1)
    end
    redis.call('HDEL', wf, k.done)
  end
end

for _, n in ipairs(plan.n) do
  local value = redis.call('HINCRBY', wf, n[1], n[3])
  if n[4] > 0 and value == tonumber(redis.call('HGET', wf, n[2]) or '-1') then
    release(n[4])
  end
end

local function complete()
  if redis.call('HSETNX', wf, k.done, '1') == 1 and plan.sr > 0 then
    release(plan.sr)
  end
end

-- Flag a top-level stage settled; true if it was not flagged before.
local function mark(sid, halted)
  if redis.call('HSETNX', wf, k.flag .. sid, halted and 'h' or '1') == 0 then
    return false
  end
  local count = redis.call('HINCRBY', wf, k.settled, 1)
  if halted then
    redis.call('HINCRBY', wf, k.halted, 1)
  end
  if count == tonumber(redis.call('HGET', wf, k.settled_t) or '-1') then
    complete()
  end
  return true
end

-- A halted stage's downstreams lose an upstream; those that can no longer start settle too.
local function cascade(from)
  local queue, head = {from}, 1
  while head <= #queue do
    local list = redis.call('HGET', wf, k.down .. queue[head])
    head = head + 1
    if list then
      for did in string.gmatch(list, '%S+') do
        local dead = redis.call('HINCRBY', wf, k.dead .. did, 1)
        if dead == tonumber(redis.call('HGET', wf, k.dead_t .. did) or '-1') and mark(did, true) then
          queue[#queue + 1] = did
        end
      end
    end
  end
end

if (#resets > 0 or #unsettles > 0) and k and plan.sr > 0 then
  if tonumber(redis.call('HGET', wf, k.settled) or '0') == tonumber(redis.call('HGET', wf, k.settled_t) or '-1') then
    complete()
  end
end

local settles = plan.s or {}
for _, s in ipairs(settles) do
  local halted = s[2] == 1
  if mark(s[1], halted) and halted then
    cascade(s[1])
  end
end
if plan.cw == 1 then
  complete()
end

for _, msg in ipairs(plan.q) do
  enqueue(ready, delayed, payloads, msg[1], ARGV[msg[2]], tonumber(msg[3]), now)
end

local cap = tonumber(plan.el or 0)
for _, idx in ipairs(plan.ev) do
  if cap > 0 then
    redis.call('XADD', events, 'MAXLEN', '~', cap, '*', K.event, ARGV[idx])
  else
    redis.call('XADD', events, '*', K.event, ARGV[idx])
  end
end

for _, note in ipairs(plan.p) do
  redis.call('PUBLISH', note[1], note[2])
end

if #plan.w > 0 or #plan.n > 0 or #plan.x > 0 or #resets > 0 or #unsettles > 0 or #settles > 0
    or plan.cw == 1 then
  redis.call('HINCRBY', wf, K.ver, 1)
  if plan.nd ~= 1 then
    redis.call('ZADD', dirty, 'NX', now, plan.wf)
  end
end

if plan.m ~= '' then
  if plan.mw ~= 1 and redis.call('EXISTS', wf) == 1 then
    redis.call('ZADD', record, now, plan.m)
    local left = tonumber(plan.ft or 0) == 0 and redis.call('PTTL', wf) or -1
    if left > 0 then  -- a finished workflow that expires: its record goes with it
      redis.call('PEXPIRE', record, left)
    end
  else
    redis.call('ZADD', done, now, plan.m)
  end
end
local ttl = tonumber(plan.ft or 0)
if ttl > 0 then
  redis.call('PEXPIRE', wf, ttl)
  redis.call('PEXPIRE', events, ttl)
  redis.call('PEXPIRE', record, ttl)
  redis.call('ZADD', KEYS[9], now + ttl, plan.wf)
elseif ttl < 0 then
  redis.call('PERSIST', wf)
  redis.call('PERSIST', events)
  redis.call('PERSIST', record)
  redis.call('ZREM', KEYS[9], plan.wf)
end
ack(ready, plan.g, plan.e)
return {1, released}
