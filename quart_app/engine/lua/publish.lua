-- Apply a publication atomically and idempotently, and fill the ranks its events ask for.
-- KEYS: 1 meta, 2 log, 3 guard (applied:<key>), 4 board, 5 players, 6 versions,
--       7 rebuild marker, 8 next board, 9 next players, 10 next versions
-- ARGV: 1 epoch candidate, 2 log length, 3 bus, 4 has key ('1'/'0'), 5 guard ttl ms, 6 ts,
--       7 number of board rows, 8 number of events, 9 number of ranked players,
--       then the ranked player ids;
--       then per row: player id, version, score (-rating), row json;
--       then per event: name, rooms json, number of rank slots k, and the data json cut at
--       its slots: part 0, slot 1, part 1, ..., slot k, part k, where a slot is 'b' (rank
--       before the rows apply) or 'a' (after) followed by the player id.
-- A rank is ZRANK + 1 on the live board (score -rating, ties by member: the board's order),
-- read in this same step, so it is the rank right after the event; 'null' when the player is
-- not on the board. A row older than the board's keeps the board, and its events carry the
-- player's current rank.
-- Returns {0} for an already applied key, else {1, epoch or '', first seq or 0, then rank
-- before and rank after per ranked player} (ranks as text: digits or 'null').
if ARGV[4] == '1' then
  if not redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[5]) then
    return {0}
  end
end
local rows, events, ranked = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local function rank(pid)
  local r = redis.call('ZRANK', KEYS[4], pid)
  if r then
    return string.format('%d', r + 1)
  end
  return 'null'
end
local before, after = {}, {}
for j = 10, 9 + ranked do
  before[ARGV[j]] = rank(ARGV[j])
end
local i = 10 + ranked
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
for j = 10, 9 + ranked do
  after[ARGV[j]] = rank(ARGV[j])
end
for _ = 1, events do
  local name, rooms_json, slots = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  i = i + 3
  local data_json = ARGV[i]
  if slots > 0 then
    local parts = {ARGV[i]}
    for _ = 1, slots do
      local slot = ARGV[i + 1]
      local pid = string.sub(slot, 2)
      if string.sub(slot, 1, 1) == 'a' then
        parts[#parts + 1] = after[pid]
      else
        parts[#parts + 1] = before[pid]
      end
      parts[#parts + 1] = ARGV[i + 2]
      i = i + 2
    end
    data_json = table.concat(parts)
  end
  i = i + 1
  append(name, rooms_json, data_json, ARGV[6])
end
flush()
local reply = {1, EPOCH or '', FIRST or 0}
for j = 10, 9 + ranked do
  reply[#reply + 1] = before[ARGV[j]]
  reply[#reply + 1] = after[ARGV[j]]
end
return reply
