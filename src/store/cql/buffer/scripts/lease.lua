-- Takes (or keeps) the deduplication lease of a request.
-- KEYS: marker, open, erased. ARGV: proposed time (ms), lease ms, marker
-- ttl ms, token, fingerprint.
-- Returns {'acquired', time_ms}, {'done'}, {'busy'} or {'erased'} (the
-- learner is being erased: nothing of theirs may be written). The time is the
-- first attempt's, reused by every later attempt (a takeover of an expired
-- lease, or a retry after an abandoned one), so rewritten events land on
-- the same rows instead of beside them.
local now = now_ms()
local ttl = tonumber(ARGV[3])
local function acquire(at)
  redis.call('SET', KEYS[1], 'L|' .. at .. '|' .. (now + tonumber(ARGV[2])) .. '|' .. ARGV[4], 'PX', ttl)
  -- Until it is counted the request's events may be in the log: repair
  -- must not count them. An entry lives as long as its marker.
  redis.call('ZADD', KEYS[2], now, ARGV[5])
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
  return {'acquired', at}
end
if redis.call('EXISTS', KEYS[3]) == 1 then return {'erased'} end
local v = redis.call('GET', KEYS[1])
if not v then return acquire(ARGV[1]) end
if v == 'D' then return {'done'} end
local at = string.match(v, '^A|(%d+)$')
if not at then
  local leased, deadline = string.match(v, '^L|(%d+)|(%d+)|')
  if leased and tonumber(deadline) < now then at = leased end
end
if at then return acquire(at) end
return {'busy'}
