-- Lets a request go without counting it (it failed before committing).
-- KEYS: marker. ARGV: token.
local v = redis.call('GET', KEYS[1])
if v and string.match(v, '^L|%d+|%d+|(.*)$') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
