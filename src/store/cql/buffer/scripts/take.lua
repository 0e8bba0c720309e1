-- A flusher takes a learner. KEYS: pending, inflight, lock, epoch, since,
-- batch, weekly pending, weekly in-flight, erased. ARGV: token, lock ms.
-- A learner being erased is {'empty'}: no counter of theirs is written
-- again. The in-flight deltas (all-time and weekly, moved together) become
-- this flusher's batch (its token in the batch key), so only its DONE may
-- delete them. Returns {'busy'} (another flusher owns it), {'empty'}, or
-- {'moved'|'replay', age ms, n, n field/delta pairs, weekly field/delta
-- pairs...}: the in-flight deltas to apply ('replay' when a crashed flush
-- left them) and the age of the oldest of them.
if redis.call('EXISTS', KEYS[9]) == 1 then return {'empty'} end
if not redis.call('SET', KEYS[3], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {'busy'}
end
local state = 'replay'
if redis.call('EXISTS', KEYS[2], KEYS[8]) == 0 then
  if redis.call('EXISTS', KEYS[1], KEYS[7]) == 0 then
    redis.call('DEL', KEYS[3])
    return {'empty'}
  end
  if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('RENAME', KEYS[1], KEYS[2]) end
  if redis.call('EXISTS', KEYS[7]) == 1 then redis.call('RENAME', KEYS[7], KEYS[8]) end
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
local n = #r / 2
for _, v in ipairs(redis.call('HGETALL', KEYS[8])) do table.insert(r, v) end
table.insert(r, 1, tostring(n))
table.insert(r, 1, tostring(age))
table.insert(r, 1, state)
return r
