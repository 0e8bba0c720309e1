-- Counts a leased request: adds its deltas to the all-time ones and to
-- those of its ISO week, turns the lease into the long marker and closes
-- the request, atomically, remembering it among the counted ones (for as
-- long as its marker lives, so erasure finds the marker), and giving the
-- learner's reads a new version (the request's labels are written by now).
-- Returns 1; 0 when the lease was lost (nothing counted); 2 while a repair
-- reads the learner's log (nothing counted: try again); 3 when the learner
-- is being erased (nothing counted).
local marker = KEYS[1]
local pending = KEYS[2]
local since = KEYS[3]
local open = KEYS[4]
local fence = KEYS[5]
local counted = KEYS[6]
local erased = KEYS[7]
local pending_weeks = KEYS[8]
local version = KEYS[9]
local token = ARGV[1]
local marker_ttl_ms = ARGV[2]
local fingerprint = ARGV[3]
local version_ttl_ms = ARGV[4]
-- The rest of ARGV, from here on: field, delta pairs.
local first_delta = 5
-- (First: an erasure deletes the lease, which is then not lost but gone.)
if redis.call('EXISTS', erased) == 1 then return 3 end
local v = redis.call('GET', marker)
if not v then return 0 end
local at, leased_by = string.match(v, '^L|(%d+)|%d+|(.*)$')
if leased_by ~= token then return 0 end
if redis.call('EXISTS', fence) == 1 then return 2 end
-- The week is the lease's time's, the time the request's events carry:
-- its Monday (UTC) in days since 1970-01-01, a Thursday.
local day = math.floor(tonumber(at) / 86400000)
local week = 'w' .. (day - (day + 3) % 7) .. ':'
for i = first_delta, #ARGV, 2 do
  redis.call('HINCRBY', pending, ARGV[i], ARGV[i + 1])
  redis.call('HINCRBY', pending_weeks, week .. ARGV[i], ARGV[i + 1])
end
-- The flush lag counts from the oldest delta; a report without points
-- adds none, so it must not start the clock.
if #ARGV >= first_delta then redis.call('SET', since, now_ms(), 'NX') end
redis.call('SET', marker, 'D', 'PX', marker_ttl_ms)
redis.call('ZREM', open, fingerprint)
-- The attempt's token: unique, so no read version comes back.
redis.call('SET', version, token, 'PX', version_ttl_ms)
local now = now_ms()
redis.call('ZADD', counted, now, fingerprint)
redis.call('ZREMRANGEBYSCORE', counted, '-inf', now - tonumber(marker_ttl_ms))
redis.call('PEXPIRE', counted, marker_ttl_ms)
return 1
