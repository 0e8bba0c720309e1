-- Counts a leased request: adds its deltas (all-time and of its week),
-- turns the lease into the long marker and closes the request, atomically.
-- KEYS: marker, pending, since, open, fence, weekly pending. ARGV: token,
-- marker ttl ms, fingerprint, n, then n field/delta pairs for pending, then
-- field/delta pairs for weekly pending. Returns 1; 0 when the lease was
-- lost (nothing counted); 2 while a repair reads the learner's log
-- (nothing counted: try again).
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local token = string.match(v, '^L|%d+|%d+|(.*)$')
if token ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[5]) == 1 then return 2 end
local last_total = 4 + 2 * tonumber(ARGV[4])
for i = 5, last_total, 2 do
  redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1])
end
for i = last_total + 1, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[6], ARGV[i], ARGV[i + 1])
end
-- The flush lag counts from the oldest delta; a report without points
-- adds none, so it must not start the clock.
if last_total > 4 then redis.call('SET', KEYS[3], now_ms(), 'NX') end
redis.call('SET', KEYS[1], 'D', 'PX', ARGV[2])
redis.call('ZREM', KEYS[4], ARGV[3])
return 1
