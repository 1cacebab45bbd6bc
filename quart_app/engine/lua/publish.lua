-- Apply a publication atomically and idempotently.
-- KEYS: 1 meta, 2 log, 3 guard (applied:<key>), 4 board, 5 players, 6 versions,
--       7 rebuild marker, 8 next board, 9 next players, 10 next versions
-- ARGV: 1 epoch candidate, 2 log length, 3 bus, 4 has key ('1'/'0'), 5 guard ttl ms, 6 ts,
--       7 number of board rows, 8 number of events,
--       then per row: player id, version, score (-rating), row json;
--       then per event: name, rooms json, data json.
-- Returns {0} for an already applied key, else {1, epoch or '', first seq or 0}.
if ARGV[4] == '1' then
  if not redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[5]) then
    return {0}
  end
end
local rows, events = tonumber(ARGV[7]), tonumber(ARGV[8])
local i = 9
if rows > 0 then
  -- While board_replace builds the next board, rows go there too, so the swap loses none.
  local rebuilding = redis.call('EXISTS', KEYS[7]) == 1
  for _ = 1, rows do
    put(KEYS[4], KEYS[5], KEYS[6], ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3])
    if rebuilding then
      put(KEYS[8], KEYS[9], KEYS[10], ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3])
    end
    i = i + 4
  end
end
for _ = 1, events do
  append(ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[6])
  i = i + 3
end
flush()
return {1, EPOCH or '', FIRST or 0}
