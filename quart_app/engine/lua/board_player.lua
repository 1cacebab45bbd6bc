-- KEYS: 1 board, 2 players, 3 ready marker. ARGV: 1 player id. Returns {} or {rank0, row json}.
-- The board is complete only once a rebuild swapped it in (board_swap.lua sets KEYS[3]); a
-- Redis that lost its data has no marker, and a board that writes refilled is partial.
if redis.call('EXISTS', KEYS[3]) == 0 then
  return 'incomplete'
end
local rank = redis.call('ZRANK', KEYS[1], ARGV[1])
if not rank then
  return {}
end
return {rank, redis.call('HGET', KEYS[2], ARGV[1])}
