-- Admit one more stream of a subject when the cluster holds fewer than the limit, and count
-- it here, in one step (no race between instances). ARGV: 2 subject, 3 limit, 4 key prefix
-- of the instance hashes. Returns {1 admitted | 0 refused | -1 re-sync first, open streams}.
-- Counts of an instance past its deadline (crashed) no longer count; the hash of one that is
-- not registered at all (swept, stopped) is deleted.
if redis.call('HEXISTS', KEYS[3], WHOLE) == 0 then
  return {-1, 0}
end
local T = redis.call('TIME')
local now = tonumber(T[1]) * 1000 + math.floor(tonumber(T[2]) / 1000)
local subject = ARGV[2]
local total = tonumber(redis.call('HGET', KEYS[3], subject) or '0')
for _, id in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if id ~= ARGV[1] then
    local deadline = redis.call('ZSCORE', KEYS[1], id)
    if not deadline then
      redis.call('DEL', ARGV[4] .. id)
      redis.call('SREM', KEYS[2], id)
    elseif tonumber(deadline) >= now then
      total = total + tonumber(redis.call('HGET', ARGV[4] .. id, subject) or '0')
    end
  end
end
if total >= tonumber(ARGV[3]) then
  return {0, total}
end
redis.call('HINCRBY', KEYS[3], subject, 1)
return {1, total + 1}
