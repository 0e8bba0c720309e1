-- Lets a request go without counting it (it failed before committing). Its
-- events may have been written all the same, so the marker keeps their
-- time for the retry that will rewrite them, and the request stays open
-- (repair leaves its events out until it is counted).
-- KEYS: marker, open, erased. ARGV: token, marker ttl ms, fingerprint.
-- (A learner being erased keeps no new key.)
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local at, token = string.match(v, '^L|(%d+)|%d+|(.*)$')
if at and token == ARGV[1] then
  redis.call('SET', KEYS[1], 'A|' .. at, 'PX', ARGV[2])
  redis.call('ZADD', KEYS[2], now_ms(), ARGV[3])
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  return 1
end
return 0
