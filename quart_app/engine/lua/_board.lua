-- Prelude: apply one versioned board row to a (board zset, players hash, versions hash) triple.
-- Older or equal versions change nothing, so rows may arrive in any order, or twice.
-- score = -rating: ZRANGE ascending is rating descending, ties by player id (byte order).
local function put(board, players, versions, pid, version, score, json)
  local current = redis.call('HGET', versions, pid)
  if current and tonumber(current) >= tonumber(version) then
    return false
  end
  redis.call('ZADD', board, score, pid)
  redis.call('HSET', players, pid, json)
  redis.call('HSET', versions, pid, version)
  return true
end
