-- KEYS: 1 board, 2 players, 3 ready marker. ARGV: 1 offset (>= 0), 2 limit (>= 1).
-- Returns {total, row json...} for ranks offset+1 .. offset+limit, in one consistent read.
-- The board is complete only once a rebuild swapped it in (board_swap.lua sets KEYS[3]); a
-- Redis that lost its data has no marker, and a board that writes refilled is partial.
if redis.call('EXISTS', KEYS[3]) == 0 then
  return 'incomplete'
end
local total = redis.call('ZCARD', KEYS[1])
local ids = redis.call('ZRANGE', KEYS[1], ARGV[1], tonumber(ARGV[1]) + tonumber(ARGV[2]) - 1)
local out = {total}
for i = 1, #ids, 500 do
  local chunk = {}
  for j = i, math.min(i + 499, #ids) do
    chunk[#chunk + 1] = ids[j]
  end
  local rows = redis.call('HMGET', KEYS[2], unpack(chunk))
  for j = 1, #rows do
    out[#out + 1] = rows[j]
  end
end
return out
