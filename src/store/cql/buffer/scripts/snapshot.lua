-- What a repair compares the log with, read at one instant, and the fence
-- lifted: the open requests (their events are left out), pending and
-- in-flight deltas, all-time and weekly. Valid only if lock and fence were
-- held throughout the log read; renewals never revive either, so holding
-- both now proves it.
-- KEYS: lock, fence, open, pending, inflight, weekly pending, weekly
-- in-flight. ARGV: token, marker ttl ms.
-- Returns {'ok'|'lost', open fingerprints, pending pairs, in-flight pairs,
-- weekly pending pairs, weekly in-flight pairs}.
if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return {'lost', {}, {}, {}, {}, {}}
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now_ms() - tonumber(ARGV[2]))
local open = redis.call('ZRANGE', KEYS[3], 0, -1)
local pending = redis.call('HGETALL', KEYS[4])
local inflight = redis.call('HGETALL', KEYS[5])
local weekly_pending = redis.call('HGETALL', KEYS[6])
local weekly_inflight = redis.call('HGETALL', KEYS[7])
redis.call('DEL', KEYS[2])
return {'ok', open, pending, inflight, weekly_pending, weekly_inflight}
