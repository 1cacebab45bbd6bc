-- Expire long-poll presence, and list dead instances (Python drops each with
-- presence_drop.lua, which re-checks the deadline). ARGV: 4 max players, 5 max instances.
-- Returns {bus message or '', dead instance id...}. Safe to run on many instances at once.
local expired = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', NOW, 'LIMIT', 0, tonumber(ARGV[4]))
for _, pid in ipairs(expired) do
  redis.call('ZREM', KEYS[4], pid)
end
settle_all(expired)
local out = {flush()}
local dead = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. fmt(NOW), 'LIMIT', 0,
  tonumber(ARGV[5]))
for _, id in ipairs(dead) do
  out[#out + 1] = id
end
return out
