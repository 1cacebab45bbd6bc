-- Start building a replacement board. KEYS: 1 rebuild marker, 2 next board, 3 next players,
-- 4 next versions. ARGV: 1 token, 2 marker ttl ms. A newer rebuild takes over an older one.
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
