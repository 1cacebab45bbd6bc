-- A long-poll of a player. ARGV: 4 player json, 5 poll presence ms.
redis.call('ZADD', KEYS[4], NOW + tonumber(ARGV[5]), ARGV[4])
settle(ARGV[4])
return {1, flush()}
