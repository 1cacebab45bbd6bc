-- Register this instance (or refresh it) with its whole local state, reconciling the counts.
-- ARGV: 4 instance id, 5 deadline ms from now, 6 op number, then player json, count pairs.
-- A sync older than one already applied only refreshes the deadline.
local registered = redis.call('ZSCORE', KEYS[3], ARGV[4])
redis.call('ZADD', KEYS[3], NOW + tonumber(ARGV[5]), ARGV[4])
local op = tonumber(ARGV[6])
if registered and op < tonumber(redis.call('HGET', KEYS[7], OP_FIELD) or '0') then
  return {1, ''}
end
local old = instance_counts()
local wanted = {}
local touched = {}
redis.call('DEL', KEYS[7])
for i = 7, #ARGV, 2 do
  local pid, count = ARGV[i], tonumber(ARGV[i + 1])
  if count > 0 then
    wanted[pid] = count
    redis.call('HSET', KEYS[7], pid, count)
  end
end
redis.call('HSET', KEYS[7], OP_FIELD, op)
for pid, count in pairs(wanted) do
  if count ~= (old[pid] or 0) then
    add_conns(pid, count - (old[pid] or 0))
    touched[#touched + 1] = pid
  end
end
for pid, count in pairs(old) do
  if not wanted[pid] then
    add_conns(pid, -count)
    touched[#touched + 1] = pid
  end
end
settle_all(touched)
return {1, flush()}
