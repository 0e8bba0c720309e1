-- Takes (or keeps) the deduplication lease of a request.
-- KEYS: marker. ARGV: proposed time (ms), lease ms, marker ttl ms, token.
-- Returns {'acquired', time_ms}, {'done'} or {'busy'}. The time is the
-- first attempt's, reused by every later attempt (a takeover of an expired
-- lease, or a retry after an abandoned one), so rewritten events land on
-- the same rows instead of beside them.
local now = now_ms()
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], 'L|' .. ARGV[1] .. '|' .. (now + tonumber(ARGV[2])) .. '|' .. ARGV[4], 'PX', ARGV[3])
  return {'acquired', ARGV[1]}
end
if v == 'D' then return {'done'} end
local at = string.match(v, '^A|(%d+)$')
if not at then
  local leased, deadline = string.match(v, '^L|(%d+)|(%d+)|')
  if leased and tonumber(deadline) < now then at = leased end
end
if at then
  redis.call('SET', KEYS[1], 'L|' .. at .. '|' .. (now + tonumber(ARGV[2])) .. '|' .. ARGV[4], 'PX', ARGV[3])
  return {'acquired', at}
end
return {'busy'}
