-- A repair that holds the learner's flush lock stops its commits: from now
-- on no request of the learner is counted until the fence is lifted (or
-- expires). Returns 1, or 0 when the lock is not this repair's.
local lock = KEYS[1]
local fence = KEYS[2]
local token = ARGV[1]
local fence_ms = ARGV[2]
if redis.call('GET', lock) ~= token then return 0 end
redis.call('SET', fence, token, 'PX', fence_ms)
return 1
