-- Moves the learner's exercise rotation along. Returns the new value, or
-- -1 when the learner is being erased (the key must not come back after
-- the erasure deleted it).
local round = KEYS[1]
local erased = KEYS[2]
if redis.call('EXISTS', erased) == 1 then return -1 end
return redis.call('INCR', round)
