-- An erasure that failed before deleting anything lifts its marker, so
-- the learner, who still exists, is served again at once. Only the marker
-- this erasure set (its token) is lifted. Returns 1, or 0 when the marker
-- is another's or gone.
local erased = KEYS[1]
local token = ARGV[1]
if redis.call('GET', erased) ~= token then return 0 end
redis.call('DEL', erased)
return 1
