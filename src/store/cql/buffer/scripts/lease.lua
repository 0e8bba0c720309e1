-- Takes (or keeps) the deduplication lease of a request.
-- KEYS: marker. ARGV: proposed time (ms), lease ms, marker ttl ms, token.
-- Returns {'acquired', time_ms} (time of the first attempt, reused by a
-- takeover so rewritten events are identical), {'done'} or {'busy'}.
local now = now_ms()
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], 'L|' .. ARGV[1] .. '|' .. (now + tonumber(ARGV[2])) .. '|' .. ARGV[4], 'PX', ARGV[3])
  return {'acquired', ARGV[1]}
end
if v == 'D' then return {'done'} end
local at, deadline = string.match(v, '^L|(%d+)|(%d+)|')
if at and tonumber(deadline) < now then
  redis.call('SET', KEYS[1], 'L|' .. at .. '|' .. (now + tonumber(ARGV[2])) .. '|' .. ARGV[4], 'PX', ARGV[3])
  return {'acquired', at}
end
return {'busy'}
