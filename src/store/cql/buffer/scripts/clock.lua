-- Put before every script that needs the time: the server's clock, so all
-- replicas agree on it.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
