-- KEYS: 1 board, 2 players, 3 ready marker. ARGV: 1 offset (>= 0), 2 limit (>= 1).
-- Returns {total, entries}: `entries` is the JSON array of the API's Entry objects for ranks
-- offset+1 .. offset+limit (PROTOCOL 2), in one consistent read, as board_page.lua.
-- Each Entry is cut out of the stored row's text, never decoded: cjson would print ratings
-- with 14 significant digits, not Python's shortest exact repr. A stored row is
-- {"player_id":..,"name":..,"rating":..,"wins":..,"losses":..,"draws":..,"games":..,"version":..}
-- (BoardEntry.to_json); the Entry is {"rank":N, then the fields before ,"games":}. That text
-- cannot occur inside a JSON string, where every quote is escaped (\").
if redis.call('EXISTS', KEYS[3]) == 0 then
  return 'incomplete'
end
local offset = tonumber(ARGV[1])
local total = redis.call('ZCARD', KEYS[1])
local ids = redis.call('ZRANGE', KEYS[1], offset, offset + tonumber(ARGV[2]) - 1)
local parts = {}
for i = 1, #ids, 500 do
  local chunk = {}
  for j = i, math.min(i + 499, #ids) do
    chunk[#chunk + 1] = ids[j]
  end
  local rows = redis.call('HMGET', KEYS[2], unpack(chunk))
  for j = 1, #rows do
    local row = rows[j]
    if row then
      local cut = string.find(row, ',"games":', 1, true) or #row
      parts[#parts + 1] = '{"rank":' .. string.format('%d', offset + i + j - 1) .. ','
        .. string.sub(row, 2, cut - 1) .. '}'
    end
  end
end
return {total, '[' .. table.concat(parts, ',') .. ']'}
