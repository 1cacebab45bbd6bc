-- Keep a running rebuild's marker alive. KEYS: 1 rebuild marker. ARGV: 1 token, 2 ttl ms.
-- Returns as board_stage.lua: 1, 0 when the marker is gone, -1 when another rebuild took over.
local state = rebuild_state(KEYS[1], ARGV[1])
if state ~= 1 then
  return state
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
