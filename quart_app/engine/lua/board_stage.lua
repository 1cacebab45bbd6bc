-- Add rows to the board being built. KEYS as board_begin.lua.
-- ARGV: 1 token, then four newline-separated lists of the same length: 2 player ids,
-- 3 versions, 4 scores, 5 row JSONs (ids follow domain/ids.py, and JSON escapes newlines,
-- so no field holds one). Five arguments instead of four per row: at 1,000,000 rows, the
-- client's encoding of each argument was most of a rebuild's time.
-- Returns 1, or 0 when the marker is gone, -1 when another rebuild took over.
-- One HMGET, ZADD and two HSETs per batch: a row published since the rebuild began (the
-- publish script writes it to the next board too) keeps its place when it is newer.
local state = rebuild_state(KEYS[1], ARGV[1])
if state ~= 1 then
  return state
end
local function lines(text)
  local out = {}
  for line in string.gmatch(text, '[^\n]+') do
    out[#out + 1] = line
  end
  return out
end
local ids, versions, scores, rows = lines(ARGV[2]), lines(ARGV[3]), lines(ARGV[4]), lines(ARGV[5])
if #ids == 0 then
  return 1
end
local staged = redis.call('HMGET', KEYS[4], unpack(ids))
local zadd, hrows, hversions = {}, {}, {}
for n = 1, #ids do
  local current = staged[n]
  if not current or tonumber(current) < tonumber(versions[n]) then
    zadd[#zadd + 1] = scores[n]
    zadd[#zadd + 1] = ids[n]
    hrows[#hrows + 1] = ids[n]
    hrows[#hrows + 1] = rows[n]
    hversions[#hversions + 1] = ids[n]
    hversions[#hversions + 1] = versions[n]
  end
end
if #zadd > 0 then
  redis.call('ZADD', KEYS[2], unpack(zadd))
  redis.call('HSET', KEYS[3], unpack(hrows))
  redis.call('HSET', KEYS[4], unpack(hversions))
end
return 1
