-- The counter batch succeeded: forget the in-flight deltas, but only when
-- they are still the batch this flusher took: a late DONE (its lock expired
-- and another flusher has moved new deltas in) must not delete those.
-- Returns 1, or 0 when the learner or its in-flight deltas are another's
-- now.
local inflight = KEYS[1]
local lock = KEYS[2]
local epoch = KEYS[3]
local batch = KEYS[4]
local inflight_weeks = KEYS[5]
local token = ARGV[1]
local owner = redis.call('GET', lock)
if owner and owner ~= token then return 0 end
if redis.call('GET', batch) ~= token then return 0 end
redis.call('DEL', inflight, batch, inflight_weeks)
if owner then redis.call('DEL', lock) end
redis.call('INCR', epoch)
return 1
