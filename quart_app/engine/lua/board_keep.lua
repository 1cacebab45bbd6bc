-- Keep a running rebuild's marker alive. KEYS: 1 rebuild marker. ARGV: 1 token, 2 ttl ms.
-- Returns as board_stage.lua: 1, 0 when the marker is gone, -1 when another rebuild took over.
local marker = redis.call('GET', KEYS[1])
if not marker then
  return 0
end
if marker ~= ARGV[1] then
  return -1
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
