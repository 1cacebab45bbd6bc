-- One connection more or less of a player on this instance.
-- ARGV: 4 instance id, 5 player json, 6 delta (+1/-1), 7 op number.
-- Returns {0, ''} when the instance is not registered (Python then syncs its whole state),
-- else {1, bus message or ''}. An op already covered by a later sync is skipped.
if not redis.call('ZSCORE', KEYS[3], ARGV[4]) then
  return {0, ''}
end
if tonumber(ARGV[7]) <= tonumber(redis.call('HGET', KEYS[7], OP_FIELD) or '0') then
  return {1, ''}
end
local pid = ARGV[5]
local old = tonumber(redis.call('HGET', KEYS[7], pid) or '0')
local new = math.max(0, old + tonumber(ARGV[6]))
if new == old then
  return {1, ''}
end
if new > 0 then
  redis.call('HSET', KEYS[7], pid, new)
else
  redis.call('HDEL', KEYS[7], pid)
end
add_conns(pid, new - old)
settle(pid)
return {1, flush()}
