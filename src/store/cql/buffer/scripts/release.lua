-- Lets the learner go: a flusher whose counter batch failed (the in-flight
-- deltas stay for a retry), or a repair, done or failed (its fence goes
-- too).
local lock = KEYS[1]
local epoch = KEYS[2]
local fence = KEYS[3]
local token = ARGV[1]
if redis.call('GET', lock) == token then
  redis.call('DEL', lock)
end
if redis.call('GET', fence) == token then
  redis.call('DEL', fence)
end
redis.call('INCR', epoch)
return 1
