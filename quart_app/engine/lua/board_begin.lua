-- Start building a replacement board. KEYS: 1 rebuild marker, 2 next board, 3 next players,
-- 4 next versions. ARGV: 1 token, 2 marker ttl ms, 3 'take-over' or 'unless-running'.
-- Returns 1 (begun), or -1 when another rebuild holds the marker and ARGV[3] is
-- 'unless-running' (nothing touched: the running one goes on). 'take-over' (an operator's
-- `rankpulse rebuild`) replaces a running one, which then fails at its next step.
if ARGV[3] == 'unless-running' and redis.call('EXISTS', KEYS[1]) == 1 then
  return -1
end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
