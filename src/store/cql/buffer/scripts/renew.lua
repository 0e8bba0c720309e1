-- Keeps the learner's flush lock (and a repair's fence) for a holder still
-- at work. Never takes a lock that expired or went to another: holding it
-- now means having held it since it was taken. Returns 1, or 0 when the
-- lock is not this holder's.
local lock = KEYS[1]
local fence = KEYS[2]
local token = ARGV[1]
local lock_ms = ARGV[2]
local fence_ms = ARGV[3]
if redis.call('GET', lock) ~= token then return 0 end
redis.call('PEXPIRE', lock, lock_ms)
if redis.call('GET', fence) == token then
  redis.call('PEXPIRE', fence, fence_ms)
end
return 1
