-- Remove an instance's connections: a graceful stop (ARGV 5 = '1'), or a dead instance found
-- by a sweep (ARGV 5 = '0': only if its deadline has passed, so that several sweepers, or a
-- late heartbeat, cannot make it happen twice or wrongly). ARGV: 4 instance id, 5 force.
-- Returns {1 if dropped else 0, bus message or ''}.
local deadline = redis.call('ZSCORE', KEYS[3], ARGV[4])
if ARGV[5] ~= '1' and (not deadline or tonumber(deadline) > NOW) then
  return {0, ''}
end
local touched = {}
for pid, count in pairs(instance_counts()) do
  add_conns(pid, -count)
  touched[#touched + 1] = pid
end
redis.call('DEL', KEYS[7])
redis.call('ZREM', KEYS[3], ARGV[4])
settle_all(touched)
return {1, flush()}
