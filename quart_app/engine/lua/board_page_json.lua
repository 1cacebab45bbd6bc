-- KEYS: 1-2 as in _log.lua (meta, log), 3 board, 4 players, 5 ready marker.
-- ARGV: 1-3 as in _log.lua, 4 offset (>= 0), 5 limit (>= 1).
-- Returns {epoch, head, total, entries}, or {epoch, head, 'incomplete'}: the log's position and
-- the page in one atomic read, so a cursor made of them names exactly what the page reflects.
-- `entries` is the JSON array of the API's Entry objects for ranks offset+1 .. offset+limit
-- (PROTOCOL 2). Each is cut out of the stored row's text, never decoded: cjson would print
-- ratings with 14 significant digits, not Python's shortest exact repr. A stored row is
-- {"player_id":..,"name":..,"rating":..,"wins":..,"losses":..,"draws":..,"games":..,"version":..}
-- (BoardEntry.to_json); the Entry is {"rank":N, then the fields before ,"games":}. That text
-- cannot occur inside a JSON string, where every quote is escaped (\").
-- The board is complete only once a rebuild swapped it in (see board_page.lua); ensure_meta()
-- removes the marker when the log starts a new epoch (Redis lost its data).
local epoch, head = ensure_meta()
if redis.call('EXISTS', KEYS[5]) == 0 then
  return {epoch, head, 'incomplete'}
end
local offset = tonumber(ARGV[4])
local total = redis.call('ZCARD', KEYS[3])
local ids = redis.call('ZRANGE', KEYS[3], offset, offset + tonumber(ARGV[5]) - 1)
local parts = {}
for i = 1, #ids, 500 do
  local chunk = {}
  for j = i, math.min(i + 499, #ids) do
    chunk[#chunk + 1] = ids[j]
  end
  local rows = redis.call('HMGET', KEYS[4], unpack(chunk))
  for j = 1, #rows do
    local row = rows[j]
    if row then
      local cut = string.find(row, ',"games":', 1, true) or #row
      parts[#parts + 1] = '{"rank":' .. string.format('%d', offset + i + j - 1) .. ','
        .. string.sub(row, 2, cut - 1) .. '}'
    end
  end
end
return {epoch, head, total, '[' .. table.concat(parts, ',') .. ']'}
