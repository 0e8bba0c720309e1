-- Lets a request go without counting it (it failed before committing). Its
-- events may have been written all the same, so the marker keeps their
-- time for the retry that will rewrite them, and the request stays open
-- (repair leaves its events out until it is counted).
local marker = KEYS[1]
local open = KEYS[2]
local erased = KEYS[3]
local token = ARGV[1]
local marker_ttl_ms = ARGV[2]
local fingerprint = ARGV[3]
-- (A learner being erased keeps no new key.)
if redis.call('EXISTS', erased) == 1 then return 0 end
local v = redis.call('GET', marker)
if not v then return 0 end
local at, leased_by = string.match(v, '^L|(%d+)|%d+|(.*)$')
if at and leased_by == token then
  redis.call('SET', marker, 'A|' .. at, 'PX', marker_ttl_ms)
  redis.call('ZADD', open, now_ms(), fingerprint)
  redis.call('PEXPIRE', open, marker_ttl_ms)
  return 1
end
return 0
