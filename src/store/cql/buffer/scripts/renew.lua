-- Keeps the learner's flush lock (and a repair's fence) for a holder still
-- at work. Never takes a lock that expired or went to another: holding it
-- now means having held it since it was taken.
-- KEYS: lock, fence. ARGV: token, lock ms, fence ms. Returns 1, or 0 when
-- the lock is not this holder's.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
return 1
