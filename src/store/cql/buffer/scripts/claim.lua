-- A repair takes the learner's flush lock, unless the learner is being
-- erased (a repair must not bring back any key of theirs, nor hold the
-- lock an erasure waits for). Returns 1 (taken), 0 (another holds it) or
-- -1 (the learner is being erased).
local lock = KEYS[1]
local erased = KEYS[2]
local token = ARGV[1]
local lock_ms = ARGV[2]
if redis.call('EXISTS', erased) == 1 then return -1 end
if redis.call('SET', lock, token, 'NX', 'PX', lock_ms) then return 1 end
return 0
