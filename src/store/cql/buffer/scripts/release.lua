-- Lets the learner go: a flusher whose counter batch failed (the in-flight
-- deltas stay for a retry), or a repair, done or failed (its fence goes
-- too). A learner being erased gets no key back (the epoch is not bumped).
local lock = KEYS[1]
local epoch = KEYS[2]
local fence = KEYS[3]
local erased = KEYS[4]
local token = ARGV[1]
if redis.call('GET', lock) == token then
  redis.call('DEL', lock)
end
if redis.call('GET', fence) == token then
  redis.call('DEL', fence)
end
if redis.call('EXISTS', erased) == 0 then redis.call('INCR', epoch) end
return 1
