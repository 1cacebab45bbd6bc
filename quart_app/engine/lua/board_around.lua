-- KEYS: 1 board, 2 players, 3 ready marker. ARGV: 1 player id, 2 radius.
-- Returns {} for an unknown player, else {index0 of the first row, row json...}.
-- The board is complete only once a rebuild swapped it in (board_swap.lua sets KEYS[3]); a
-- Redis that lost its data has no marker, and a board that writes refilled is partial.
if redis.call('EXISTS', KEYS[3]) == 0 then
  return 'incomplete'
end
local rank = redis.call('ZRANK', KEYS[1], ARGV[1])
if not rank then
  return {}
end
local radius = tonumber(ARGV[2])
local start = math.max(0, rank - radius)
local stop = rank + radius
local out = {start}
if stop < start then
  return out
end
local ids = redis.call('ZRANGE', KEYS[1], start, stop)
if #ids == 0 then
  return out
end
local rows = redis.call('HMGET', KEYS[2], unpack(ids))
for j = 1, #rows do
  out[#out + 1] = rows[j]
end
return out
