-- What a repair compares the log with, read at one instant, and the fence
-- lifted: the open requests (their events are left out), pending and
-- in-flight deltas, all-time and weekly. Valid only if lock and fence were
-- held throughout the log read; renewals never revive either, so holding
-- both now proves it.
-- In-flight deltas left by a flusher that lost its lock become this
-- repair's batch: whether that flusher's counter batch was applied or not,
-- the repair corrects the counters to the log less everything buffered,
-- and the next flusher applies the in-flight deltas once; the late DONE of
-- the flusher that lost the lock then finds the batch not its own and
-- deletes nothing.
-- Returns {'ok'|'lost', open fingerprints, pending pairs, in-flight pairs,
-- weekly pending pairs, weekly in-flight pairs}.
local lock = KEYS[1]
local fence = KEYS[2]
local open = KEYS[3]
local pending = KEYS[4]
local inflight = KEYS[5]
local pending_weeks = KEYS[6]
local inflight_weeks = KEYS[7]
local batch = KEYS[8]
local token = ARGV[1]
local marker_ttl_ms = ARGV[2]
if redis.call('GET', lock) ~= token or redis.call('GET', fence) ~= token then
  return {'lost', {}, {}, {}, {}, {}}
end
redis.call('ZREMRANGEBYSCORE', open, '-inf', now_ms() - tonumber(marker_ttl_ms))
local open_requests = redis.call('ZRANGE', open, 0, -1)
local pending_pairs = redis.call('HGETALL', pending)
local inflight_pairs = redis.call('HGETALL', inflight)
local weekly_pending = redis.call('HGETALL', pending_weeks)
local weekly_inflight = redis.call('HGETALL', inflight_weeks)
if redis.call('EXISTS', inflight, inflight_weeks) > 0 then
  redis.call('SET', batch, token)
end
redis.call('DEL', fence)
return {'ok', open_requests, pending_pairs, inflight_pairs, weekly_pending, weekly_inflight}
