-- A running rebuild's state, from its marker (KEYS[1] of board_stage, board_swap, board_keep):
-- 1 it runs, 0 its marker is gone (Redis lost its data, or it expired), -1 another rebuild
-- took over.
local function rebuild_state(marker_key, token)
  local marker = redis.call('GET', marker_key)
  if not marker then
    return 0
  end
  if marker ~= token then
    return -1
  end
  return 1
end
