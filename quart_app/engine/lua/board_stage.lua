-- Add rows to the board being built. KEYS as board_begin.lua.
-- ARGV: 1 token, then per row: player id, version, score, row json.
-- Returns 1, or 0 when the marker is gone, -1 when another rebuild took over.
-- One HMGET, ZADD and two HSETs per batch (not four calls per row): a rebuild of 1,000,000
-- rows spends its Redis time here. A row published since the rebuild began (the publish
-- script writes it to the next board too) keeps its place when it is newer.
local marker = redis.call('GET', KEYS[1])
if not marker then
  return 0
end
if marker ~= ARGV[1] then
  return -1
end
local ids = {}
for i = 2, #ARGV, 4 do
  ids[#ids + 1] = ARGV[i]
end
if #ids == 0 then
  return 1
end
local staged = redis.call('HMGET', KEYS[4], unpack(ids))
local scores, rows, versions = {}, {}, {}
for n = 1, #ids do
  local i = 4 * n - 2
  local current = staged[n]
  if not current or tonumber(current) < tonumber(ARGV[i + 1]) then
    scores[#scores + 1] = ARGV[i + 2]
    scores[#scores + 1] = ARGV[i]
    rows[#rows + 1] = ARGV[i]
    rows[#rows + 1] = ARGV[i + 3]
    versions[#versions + 1] = ARGV[i]
    versions[#versions + 1] = ARGV[i + 1]
  end
end
if #scores > 0 then
  redis.call('ZADD', KEYS[2], unpack(scores))
  redis.call('HSET', KEYS[3], unpack(rows))
  redis.call('HSET', KEYS[4], unpack(versions))
end
return 1
