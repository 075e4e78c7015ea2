-- checkpoint_lease: the lease that makes one checkpointer at a time drain a partition.
--
-- KEYS[1] the partition's lease key
-- ARGV[1] 'acquire' or 'release'
-- ARGV[2] owner token
-- ARGV[3] time to live (ms), for 'acquire'
--
-- acquire: take the lease if it is free, or extend it if this owner holds it.
-- release: delete the lease if this owner holds it.
-- Returns 1 when the owner holds (acquire) or released (release) the lease, else 0.
-- Events: none.

local lease, op, owner = KEYS[1], ARGV[1], ARGV[2]
local holder = redis.call('GET', lease)

if op == 'acquire' then
  local ttl = tonumber(ARGV[3])
  if not holder then
    redis.call('SET', lease, owner, 'PX', ttl)
    return 1
  end
  if holder == owner then
    redis.call('PEXPIRE', lease, ttl)
    return 1
  end
  return 0
end

if op == 'release' and holder == owner then
  redis.call('DEL', lease)
  return 1
end
return 0
