-- Takes (or keeps) the deduplication lease of a request.
-- Returns {'acquired', time_ms}, {'done'}, {'busy'} or {'erased'} (the
-- learner is being erased: nothing of theirs may be written). The time is the
-- first attempt's, reused by every later attempt (a takeover of an expired
-- lease, or a retry after an abandoned one), so rewritten events land on
-- the same rows instead of beside them.
local marker = KEYS[1]
local open = KEYS[2]
local erased = KEYS[3]
local proposed_ms = ARGV[1]
local lease_ms = ARGV[2]
local marker_ttl_ms = ARGV[3]
local token = ARGV[4]
local fingerprint = ARGV[5]
local now = now_ms()
local ttl = tonumber(marker_ttl_ms)
local function acquire(at)
  redis.call('SET', marker, 'L|' .. at .. '|' .. (now + tonumber(lease_ms)) .. '|' .. token, 'PX', ttl)
  -- Until it is counted the request's events may be in the log: repair
  -- must not count them. An entry lives as long as its marker.
  redis.call('ZADD', open, now, fingerprint)
  redis.call('ZREMRANGEBYSCORE', open, '-inf', now - ttl)
  redis.call('PEXPIRE', open, ttl)
  return {'acquired', at}
end
if redis.call('EXISTS', erased) == 1 then return {'erased'} end
local v = redis.call('GET', marker)
if not v then return acquire(proposed_ms) end
if v == 'D' then return {'done'} end
local at = string.match(v, '^A|(%d+)$')
if not at then
  local leased, deadline = string.match(v, '^L|(%d+)|(%d+)|')
  if leased and tonumber(deadline) < now then at = leased end
end
if at then return acquire(at) end
return {'busy'}
