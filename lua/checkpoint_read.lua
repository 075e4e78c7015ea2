-- checkpoint_read: read, for the checkpointer, the due workflows among dirty ones of one
-- partition, in one call. Writes nothing.
--
-- KEYS[1]                 the partition's dirty set
-- KEYS[2k], KEYS[2k+1]    hash and event stream of the k-th workflow (k = 1..n)
-- ARGV[1] interval (ms): a workflow is due once its dirty score is at least this old
-- ARGV[2] statuses due at once (finished, suspended, paused), as ',NAME,NAME,'
-- ARGV[3] maximum number of events returned per workflow
-- ARGV[3+k] id of the k-th workflow
--
-- Returns {now_ms, r_1, ..., r_n} (now_ms: server time of the read), where r_k is
--   0                 not dirty (checkpointed meanwhile) or not due yet
--   -1                dirty, but the hash is gone (deleted or evicted)
--   {fields, events}  due: fields = HGETALL reply (flat); events = XRANGE reply of the entries
--                     after the last archived id (hash field `ckpt_ev`), at most ARGV[3]
-- Events: none.

--@include includes/enqueue.lua

local dirty = KEYS[1]
local interval, immediate, max_events = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local now = now_ms()
local out = {now}

for k = 1, #ARGV - 3 do
  local id, wf, events = ARGV[3 + k], KEYS[2 * k], KEYS[2 * k + 1]
  local score = redis.call('ZSCORE', dirty, id)
  local result = 0
  if score then
    local due = tonumber(score) <= now - interval
    if not due then
      local st = redis.call('HGET', wf, K.status)
      due = (not st) or string.find(immediate, ',' .. st .. ',', 1, true) ~= nil
    end
    if due then
      local fields = redis.call('HGETALL', wf)
      if #fields == 0 then
        result = -1
      else
        local last = redis.call('HGET', wf, K.ckpt_ev)
        local start = '-'
        if last and last ~= '' then
          start = '(' .. last
        end
        result = {fields, redis.call('XRANGE', events, start, '+', 'COUNT', max_events)}
      end
    end
  end
  out[k + 1] = result
end
return out
