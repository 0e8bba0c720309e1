-- Moves the learner's exercise rotation along. KEYS: round, erased.
-- Returns the new value, or -1 when the learner is being erased (the key
-- must not come back after the erasure deleted it).
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
return redis.call('INCR', KEYS[1])
