-- Lets the learner go: a flusher whose counter batch failed (the in-flight
-- deltas stay for a retry), or a repair, done or failed (its fence goes
-- too). KEYS: lock, epoch, fence. ARGV: token.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
if redis.call('GET', KEYS[3]) == ARGV[1] then
  redis.call('DEL', KEYS[3])
end
redis.call('INCR', KEYS[2])
return 1
