-- Heartbeat. ARGV: 4 instance id, 5 deadline ms from now.
-- Returns 1, or 0 when the instance is not registered (dropped as dead, or Redis lost its
-- data): Python then syncs its whole state.
if not redis.call('ZSCORE', KEYS[3], ARGV[4]) then
  return 0
end
redis.call('ZADD', KEYS[3], NOW + tonumber(ARGV[5]), ARGV[4])
return 1
