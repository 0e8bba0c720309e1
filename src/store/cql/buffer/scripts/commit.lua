-- Counts a leased request: adds its deltas and turns the lease into the
-- long marker, atomically. KEYS: marker, pending, since. ARGV: token,
-- marker ttl ms, then field, delta pairs. Returns 1, or 0 when the lease
-- was lost.
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local token = string.match(v, '^L|%d+|%d+|(.*)$')
if token ~= ARGV[1] then return 0 end
for i = 3, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1])
end
-- The flush lag counts from the oldest delta; a report without points
-- adds none, so it must not start the clock.
if #ARGV >= 3 then redis.call('SET', KEYS[3], now_ms(), 'NX') end
redis.call('SET', KEYS[1], 'D', 'PX', ARGV[2])
return 1
