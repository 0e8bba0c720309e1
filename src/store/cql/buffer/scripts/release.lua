-- The counter batch failed: keep the in-flight deltas for a retry, let the
-- learner go. KEYS: lock, epoch. ARGV: token.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
redis.call('INCR', KEYS[2])
return 1
