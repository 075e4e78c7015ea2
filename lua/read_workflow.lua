-- read_workflow: one round trip for what a handler reads: the workflow meta, some stages and
-- (optionally) their direct upstream/downstream stages, counters, and whether the message
-- being handled is already in the dedup record. Read-only.
--
-- KEYS[1] workflow hash   KEYS[2] partition's windowed dedup record (zset)
-- KEYS[3] the workflow's dedup record (zset); a message id in either is processed
-- ARGV[1] message id to look up in the dedup record ('' for none)
-- ARGV[2] neighbours to include: '' | 'up' | 'down' | 'both'
-- ARGV[3] stage ids, space-separated
-- ARGV[4] '' or '<counter prefix> <threshold prefix>': also return, for every stage returned,
--         the plain fields <counter prefix><stage id> and <threshold prefix><stage id> (its join
--         counter and the counter's stored threshold)
-- ARGV[5..] other fields to return as they are (counters, thresholds)
--
-- Neighbour ids come from the plain fields u:<stage id> / d:<stage id> (space-separated),
-- written when the workflow is laid out. With ARGV[4] given, a downstream neighbour (one not
-- asked for in ARGV[3], reached through d:) whose stored join threshold is above 1 is returned
-- with its counter and threshold but without its record (blob and version false): a completion
-- only counts toward such a join, so a wide fan's join record is never read (or decoded) by each
-- of its upstreams. The caller reads the records it does need (an OR split's downstreams).
--
-- Returns {processed (0|1), meta, meta version, #others, other values..., then per stage read:
--          stage id, blob, version [, counter, threshold when ARGV[4] names them]}. Missing
--          values are false.
-- Events: none.

local wf = KEYS[1]
local processed = 0
if ARGV[1] ~= '' and (redis.call('ZSCORE', KEYS[3], ARGV[1]) or redis.call('ZSCORE', KEYS[2], ARGV[1])) then
  processed = 1
end
local out = {processed, redis.call('HGET', wf, K.meta), redis.call('HGET', wf, K.v .. K.meta), #ARGV - 4}
for i = 5, #ARGV do
  out[#out + 1] = redis.call('HGET', wf, ARGV[i])
end

local ids, seen, down = {}, {}, {}
local function add(id, is_down)
  if id ~= '' and not seen[id] then
    seen[id] = true
    ids[#ids + 1] = id
    down[id] = is_down
  end
end
for id in string.gmatch(ARGV[3], '%S+') do
  add(id)
end
local requested = #ids
local mode = ARGV[2]
for i = 1, requested do
  for _, prefix in ipairs({K.u, K.d}) do
    if (prefix == K.u and (mode == 'up' or mode == 'both')) or
       (prefix == K.d and (mode == 'down' or mode == 'both')) then
      local list = redis.call('HGET', wf, prefix .. ids[i])
      if list then
        for id in string.gmatch(list, '%S+') do
          add(id, prefix == K.d)
        end
      end
    end
  end
end
local counter, threshold = string.match(ARGV[4], '^(%S+) (%S+)$')
for _, id in ipairs(ids) do
  local limit = counter and redis.call('HGET', wf, threshold .. id)
  out[#out + 1] = id
  if counter and down[id] and limit and tonumber(limit) > 1 then
    out[#out + 1] = false
    out[#out + 1] = false
  else
    out[#out + 1] = redis.call('HGET', wf, K.s .. id)
    out[#out + 1] = redis.call('HGET', wf, K.v .. K.s .. id)
  end
  if counter then
    out[#out + 1] = redis.call('HGET', wf, counter .. id)
    out[#out + 1] = limit
  end
end
return out
