-- read_region: one round trip for a reset (a jump or a restart): find the region the reset
-- changes, walking the graph by the plain neighbour fields, and return its records, the
-- records around it and their counters. Read-only; cost O(region + its border), never
-- O(workflow).
--
-- KEYS[1] workflow hash
-- ARGV[1] source stage id (the jumping stage; for a restart, the restarted stage)
-- ARGV[2] target: a ref id (mode 'jump') or a stage id (mode 'restart')
-- ARGV[3] mode: 'jump' | 'restart'
-- ARGV[4..] other fields to return as they are (the settled/halted counters, the threshold)
--
-- The region, from the target T and the source S:
--   scope    T and every stage all of whose upstreams are in scope (fan-in aware: a downstream
--            that also waits on a stage outside the scope is not reset)
--   backward 1 if S is T, in scope, or reachable from T at all (a loop back); 0 otherwise
--   skips    forward jumps only: the stages all of whose upstreams lie in S's own fan-in aware
--            closure, minus T and everything reachable from T
--   changed  scope, S and skips; border: their direct downstreams outside changed ("outer"),
--            then, from every outer stage settled as unable to run ('h'), its downstreams, and
--            theirs while they are 'h' too (they may run again: "counted" = changed, outer and
--            these), and the direct upstreams of the counted stages ("inner border")
--
-- Returns {meta, meta version, target id | false, backward, scope ids, skip ids, number of
--          counted stages (the first rows), #others, other values..., then for every stage of
--          changed, outer and the inner border:
--          id, blob, version, join counter, join threshold, dead counter, dead threshold,
--          settled flag}. Ids lists are space-separated strings; missing values are false.
--          A target that does not exist (no ref index entry, no blob): target id false,
--          backward 0, empty lists, and the source's row only.
-- Events: none.

local wf = KEYS[1]
local src, target, mode = ARGV[1], ARGV[2], ARGV[3]
local BLOB, VER, UP, DOWN, REF = K.s, K.v, K.u, K.d, K.r
local JC, JT, DC, DT, FLAG = K.join_c, K.join_t, K.dead_c, K.dead_t, K.settled_flag

local meta, meta_v = redis.call('HGET', wf, K.meta), redis.call('HGET', wf, VER .. K.meta)
local tid = target
if mode == 'jump' then
  tid = redis.call('HGET', wf, REF .. target)
end
if tid and redis.call('HEXISTS', wf, BLOB .. tid) == 0 then
  tid = false
end

local function ids(field)
  local out, list = {}, redis.call('HGET', wf, field)
  if list then
    for id in string.gmatch(list, '%S+') do
      out[#out + 1] = id
    end
  end
  return out
end

-- The fan-in aware closure of `seed`: a stage joins once every one of its upstreams has.
local function closure(seed)
  local inside, order, head = {[seed] = true}, {seed}, 1
  while head <= #order do
    for _, d in ipairs(ids(DOWN .. order[head])) do
      if not inside[d] then
        local all = true
        for _, u in ipairs(ids(UP .. d)) do
          if not inside[u] then
            all = false
            break
          end
        end
        if all then
          inside[d] = true
          order[#order + 1] = d
        end
      end
    end
    head = head + 1
  end
  return inside, order
end

-- Everything reachable from `seed` (seed included).
local function reachable(seed)
  local seen, order, head = {[seed] = true}, {seed}, 1
  while head <= #order do
    for _, d in ipairs(ids(DOWN .. order[head])) do
      if not seen[d] then
        seen[d] = true
        order[#order + 1] = d
      end
    end
    head = head + 1
  end
  return seen
end

local scope, scope_order, backward, skips = {}, {}, 0, {}
if tid then
  scope, scope_order = closure(tid)
  backward = 1
end
if tid and mode == 'jump' and src ~= tid and not scope[src] then
  local from_target = reachable(tid)
  if not from_target[src] then
    backward = 0
    local _, own = closure(src)
    for i = 2, #own do
      if not from_target[own[i]] then
        skips[#skips + 1] = own[i]
      end
    end
  end
end

local listed, rows = {}, {}
local function add(id)
  if not listed[id] then
    listed[id] = true
    rows[#rows + 1] = id
  end
end
for _, id in ipairs(scope_order) do add(id) end
add(src)
for _, id in ipairs(skips) do add(id) end
local changed = #rows
for i = 1, changed do
  for _, d in ipairs(ids(DOWN .. rows[i])) do add(d) end
end
-- The stages settled as unable to run ('h') below the changed ones may run again: follow them,
-- with their downstreams (whose dead counters they fed), as far as such stages go.
local i = changed + 1
while i <= #rows do
  if redis.call('HGET', wf, FLAG .. rows[i]) == 'h' then
    for _, d in ipairs(ids(DOWN .. rows[i])) do add(d) end
  end
  i = i + 1
end
local ringed = #rows
for j = 1, ringed do
  for _, u in ipairs(ids(UP .. rows[j])) do add(u) end
end

local out = {meta, meta_v, tid or false, backward, table.concat(scope_order, ' '), table.concat(skips, ' '), ringed,
             #ARGV - 3}
for i = 4, #ARGV do
  out[#out + 1] = redis.call('HGET', wf, ARGV[i])
end
for _, id in ipairs(rows) do
  local row = redis.call('HMGET', wf, BLOB .. id, VER .. BLOB .. id, JC .. id, JT .. id, DC .. id, DT .. id, FLAG .. id)
  out[#out + 1] = id
  for j = 1, 7 do
    out[#out + 1] = row[j]
  end
end
return out
