-- checkpoint_life: read, and raise, a partition's checkpoint epoch (durability/epochs.py).
--
-- The checkpointer loads this script once per Redis life with one line appended,
-- `-- life <random token>`, so its SHA names the server process that loaded it: Redis 7
-- neither persists nor replicates its script cache, so after a restart (from an AOF that may
-- have lost writes), a failover or a SCRIPT FLUSH that SHA is unknown (SCRIPT EXISTS answers
-- 0) and the checkpointer knows a new life began.
--
-- KEYS[1] the partition's life hash
-- ARGV[1] epoch to raise the stored one to; '' only reads
--
-- Returns the stored epoch after the raise (0 when none was ever stored).
-- Events: none.

local life = KEYS[1]
local stored = tonumber(redis.call('HGET', life, K.epoch) or '0')
local wanted = tonumber(ARGV[1] or '')
if wanted and wanted > stored then
  redis.call('HSET', life, K.epoch, wanted)
  stored = wanted
end
return stored
