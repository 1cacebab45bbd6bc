-- Prelude of the presence scripts (after _log.lua).
-- KEYS: 1 meta, 2 log, 3 instances zset (instance id -> deadline ms), 4 polls zset (player ->
-- poll presence deadline ms), 5 conns hash (player -> open connections, cluster-wide),
-- 6 online set, 7 this instance's hash (player -> its connections here, '#op' -> last sync op).
-- Players are stored as their JSON text (json.dumps(player_id)), so the event data is built
-- by concatenation, byte-identical to Python's presence_draft().
-- Time is Redis' clock, so instances with skewed clocks agree.
local T = redis.call('TIME')
local NOW = tonumber(T[1]) * 1000 + math.floor(tonumber(T[2]) / 1000)
local OP_FIELD = '#op'

-- Publish player:online / player:offline when the player's state changed, once.
local function settle(pid)
  local online = tonumber(redis.call('HGET', KEYS[5], pid) or '0') > 0
  if not online then
    local until_ms = redis.call('ZSCORE', KEYS[4], pid)
    online = until_ms ~= false and tonumber(until_ms) > NOW
  end
  local was = redis.call('SISMEMBER', KEYS[6], pid) == 1
  if online == was then
    return
  end
  local name = 'player:offline'
  if online then
    redis.call('SADD', KEYS[6], pid)
    name = 'player:online'
  else
    redis.call('SREM', KEYS[6], pid)
  end
  local count = redis.call('SCARD', KEYS[6])
  append(name, '["presence"]', '{"player_id":' .. pid .. ',"online_count":' .. fmt(count) .. '}',
    fmt(NOW))
end

-- Add `delta` connections of a player to the cluster-wide count.
local function add_conns(pid, delta)
  if delta == 0 then
    return
  end
  if redis.call('HINCRBY', KEYS[5], pid, delta) <= 0 then
    redis.call('HDEL', KEYS[5], pid)
  end
end

-- This instance's counts, {player -> count}, without the op field.
local function instance_counts()
  local flat = redis.call('HGETALL', KEYS[7])
  local counts = {}
  for i = 1, #flat, 2 do
    if flat[i] ~= OP_FIELD then
      counts[flat[i]] = tonumber(flat[i + 1])
    end
  end
  return counts
end

local function settle_all(touched)
  table.sort(touched)
  for _, pid in ipairs(touched) do
    settle(pid)
  end
end
