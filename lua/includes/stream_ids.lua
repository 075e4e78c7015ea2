-- Shared helper: compare Redis stream entry ids ('<ms>-<seq>'). Included, so no KEYS or ARGV
-- of its own. Returns: see the function. Events: none.
-- stream_id_gt(a, b): true when id a sorts after id b; an empty or missing b sorts first.
local function stream_id_gt(a, b)
  if b == nil or b == false or b == '' then
    return a ~= nil and a ~= false and a ~= ''
  end
  if a == nil or a == false or a == '' then
    return false
  end
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  if am ~= bm then
    return am > bm
  end
  return as > bs
end
