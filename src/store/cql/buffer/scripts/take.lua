-- A flusher takes a learner. KEYS: pending, inflight, lock, epoch, since,
-- batch, erased. ARGV: token, lock ms. A learner being erased is
-- {'empty'}: no counter of theirs is written again. The in-flight deltas become this flusher's
-- batch (its token in the batch key), so only its DONE may delete them. Returns {'busy'} (another flusher owns it),
-- {'empty'}, or {'moved'|'replay', age ms, field, delta, ...}: the
-- in-flight deltas to apply ('replay' when a crashed flush left them) and
-- the age of the oldest of them.
if redis.call('EXISTS', KEYS[7]) == 1 then return {'empty'} end
if not redis.call('SET', KEYS[3], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {'busy'}
end
local state = 'replay'
if redis.call('EXISTS', KEYS[2]) == 0 then
  if redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('DEL', KEYS[3])
    return {'empty'}
  end
  redis.call('RENAME', KEYS[1], KEYS[2])
  state = 'moved'
end
local age = 0
local since = redis.call('GET', KEYS[5])
if since and state == 'moved' then
  age = now_ms() - tonumber(since)
  redis.call('DEL', KEYS[5])
end
redis.call('SET', KEYS[6], ARGV[1])
redis.call('INCR', KEYS[4])
local r = redis.call('HGETALL', KEYS[2])
table.insert(r, 1, tostring(age))
table.insert(r, 1, state)
return r
