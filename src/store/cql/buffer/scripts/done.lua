-- The counter batch succeeded: forget the in-flight deltas. KEYS: inflight,
-- lock, epoch. ARGV: token. Returns 1, or 0 when another flusher owns the
-- learner now (the lock expired and was taken).
local owner = redis.call('GET', KEYS[2])
if owner and owner ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
if owner then redis.call('DEL', KEYS[2]) end
redis.call('INCR', KEYS[3])
return 1
