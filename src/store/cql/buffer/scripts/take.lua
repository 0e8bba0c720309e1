-- A flusher takes a learner. A learner being erased is {'empty'}: no
-- counter of theirs is written again. The in-flight deltas (all-time and
-- weekly, moved together) become this flusher's batch (its token in the
-- batch key), so only its DONE may delete them. Returns {'busy'} (another
-- flusher owns it), {'empty'}, or {'moved'|'replay', age ms, n, n
-- field/delta pairs, weekly field/delta pairs...}: the in-flight deltas to
-- apply ('replay' when a crashed flush left them) and the age of the
-- oldest of them.
local pending = KEYS[1]
local inflight = KEYS[2]
local lock = KEYS[3]
local epoch = KEYS[4]
local since = KEYS[5]
local batch = KEYS[6]
local pending_weeks = KEYS[7]
local inflight_weeks = KEYS[8]
local erased = KEYS[9]
local token = ARGV[1]
local lock_ms = ARGV[2]
if redis.call('EXISTS', erased) == 1 then return {'empty'} end
if not redis.call('SET', lock, token, 'NX', 'PX', lock_ms) then
  return {'busy'}
end
local state = 'replay'
if redis.call('EXISTS', inflight, inflight_weeks) == 0 then
  if redis.call('EXISTS', pending, pending_weeks) == 0 then
    redis.call('DEL', lock)
    return {'empty'}
  end
  if redis.call('EXISTS', pending) == 1 then redis.call('RENAME', pending, inflight) end
  if redis.call('EXISTS', pending_weeks) == 1 then redis.call('RENAME', pending_weeks, inflight_weeks) end
  state = 'moved'
end
local age = 0
local oldest = redis.call('GET', since)
if oldest and state == 'moved' then
  age = now_ms() - tonumber(oldest)
  redis.call('DEL', since)
end
redis.call('SET', batch, token)
redis.call('INCR', epoch)
local r = redis.call('HGETALL', inflight)
local n = #r / 2
for _, v in ipairs(redis.call('HGETALL', inflight_weeks)) do table.insert(r, v) end
table.insert(r, 1, tostring(n))
table.insert(r, 1, tostring(age))
table.insert(r, 1, state)
return r
