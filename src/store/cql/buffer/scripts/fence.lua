-- A repair that holds the learner's flush lock stops its commits: from now
-- on no request of the learner is counted until the fence is lifted (or
-- expires). KEYS: lock, fence. ARGV: token, fence ms. Returns 1, or 0 when
-- the lock is not this repair's.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return 1
