-- Add rows to the board being built. KEYS as board_begin.lua.
-- ARGV: 1 token, then per row: player id, version, score, row json.
-- Returns 1, or 0 when the marker is gone, -1 when another rebuild took over.
local marker = redis.call('GET', KEYS[1])
if not marker then
  return 0
end
if marker ~= ARGV[1] then
  return -1
end
for i = 2, #ARGV, 4 do
  put(KEYS[2], KEYS[3], KEYS[4], ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3])
end
return 1
