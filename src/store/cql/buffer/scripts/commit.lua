-- Counts a leased request: adds its deltas to the all-time ones and to
-- those of its ISO week, turns the lease into the long marker and closes
-- the request, atomically, remembering it among the counted ones (for as
-- long as its marker lives, so erasure finds the marker), and giving the
-- learner's reads a new version (the request's labels are written by now).
-- KEYS: marker, pending, since, open, fence, counted, erased, weekly
-- pending, read version. ARGV: token, marker ttl ms, fingerprint, read
-- version ttl ms, then field, delta pairs. Returns 1; 0
-- when the lease was lost (nothing counted); 2 while a repair reads the
-- learner's log (nothing counted: try again); 3 when the learner is being
-- erased (nothing counted).
-- (First: an erasure deletes the lease, which is then not lost but gone.)
if redis.call('EXISTS', KEYS[7]) == 1 then return 3 end
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local at, token = string.match(v, '^L|(%d+)|%d+|(.*)$')
if token ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[5]) == 1 then return 2 end
-- The week is the lease's time's, the time the request's events carry:
-- its Monday (UTC) in days since 1970-01-01, a Thursday.
local day = math.floor(tonumber(at) / 86400000)
local week = 'w' .. (day - (day + 3) % 7) .. ':'
for i = 5, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1])
  redis.call('HINCRBY', KEYS[8], week .. ARGV[i], ARGV[i + 1])
end
-- The flush lag counts from the oldest delta; a report without points
-- adds none, so it must not start the clock.
if #ARGV >= 5 then redis.call('SET', KEYS[3], now_ms(), 'NX') end
redis.call('SET', KEYS[1], 'D', 'PX', ARGV[2])
redis.call('ZREM', KEYS[4], ARGV[3])
-- The attempt's token: unique, so no read version comes back.
redis.call('SET', KEYS[9], ARGV[1], 'PX', ARGV[4])
local now = now_ms()
redis.call('ZADD', KEYS[6], now, ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[6], ARGV[2])
return 1
