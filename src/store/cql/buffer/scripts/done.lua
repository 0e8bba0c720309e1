-- The counter batch succeeded: forget the in-flight deltas, but only when
-- they are still the batch this flusher took: a late DONE (its lock expired
-- and another flusher has moved new deltas in) must not delete those.
-- KEYS: inflight, lock, epoch, batch, weekly in-flight. ARGV: token.
-- Returns 1, or 0 when the learner or its in-flight deltas are another's
-- now.
local owner = redis.call('GET', KEYS[2])
if owner and owner ~= ARGV[1] then return 0 end
if redis.call('GET', KEYS[4]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[4], KEYS[5])
if owner then redis.call('DEL', KEYS[2]) end
redis.call('INCR', KEYS[3])
return 1
