-- Swap the built board in, atomically, and mark the board complete (the reads serve it only
-- while that marker exists; a data loss removes it with everything else).
-- KEYS: 1 rebuild marker, 2 board, 3 players, 4 versions, 5 next board, 6 next players,
-- 7 next versions, 8 ready marker, 9..11 retired board, players, versions (scratch names).
-- ARGV: 1 token. Returns as board_stage.lua.
-- The replaced keys are moved aside and UNLINKed (freed in Redis's background thread):
-- RENAME over them freed a 1,000,000-player board inside this script, and Redis answered
-- nobody for seconds.
local state = rebuild_state(KEYS[1], ARGV[1])
if state ~= 1 then
  return state
end
for i = 2, 4 do
  local retired = KEYS[i + 7]
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('RENAME', KEYS[i], retired)
  end
  if redis.call('EXISTS', KEYS[i + 3]) == 1 then
    redis.call('RENAME', KEYS[i + 3], KEYS[i])
  end
  redis.call('UNLINK', retired)
end
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[8], '1')
return 1
