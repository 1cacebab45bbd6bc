-- KEYS: 1 board, 2 players. ARGV: 1 player id. Returns {} or {rank0, row json}.
local rank = redis.call('ZRANK', KEYS[1], ARGV[1])
if not rank then
  return {}
end
return {rank, redis.call('HGET', KEYS[2], ARGV[1])}
