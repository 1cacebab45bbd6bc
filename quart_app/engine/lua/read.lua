-- Read the log. KEYS: 1 meta, 2 log. ARGV: 1-3 as in _log.lua, 4 after seq ('' = head only),
-- 5 limit.
-- Returns {epoch, head, status, first} then id, name, rooms json, text per event.
-- status 0 = ok, 1 = unknown (after < 0 or past the head), 2 = expired (the events right after
-- `after` were trimmed; `first` is the oldest retained seq).
local epoch, head = ensure_meta()
if ARGV[4] == '' then
  return {epoch, head, 0, 0}
end
local after = tonumber(ARGV[4])
if after < 0 or after > head then
  return {epoch, head, 1, 0}
end
if after == head then
  return {epoch, head, 0, 0}
end
local limit = tonumber(ARGV[5])
local count = limit
if count < 1 then
  count = 1
end
local entries = redis.call('XRANGE', KEYS[2], '(' .. fmt(after) .. '-0', '+', 'COUNT', count)
if #entries == 0 or entries[1][1] ~= fmt(after + 1) .. '-0' then
  local oldest = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
  local first = head + 1
  if #oldest > 0 then
    first = tonumber(string.match(oldest[1][1], '^(%d+)'))
  end
  return {epoch, head, 2, first}
end
local out = {epoch, head, 0, 0}
if limit < 1 then
  return out
end
for _, entry in ipairs(entries) do
  local f = entry[2]
  out[#out + 1] = entry[1]
  out[#out + 1] = f[2]
  out[#out + 1] = f[4]
  out[#out + 1] = f[6]
end
return out
