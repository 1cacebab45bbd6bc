-- One stream of a subject closed here. ARGV: 2 subject. Returns 1, or -1 when this
-- instance's counts are gone (Python re-syncs them).
if redis.call('HEXISTS', KEYS[3], WHOLE) == 0 then
  return -1
end
if redis.call('HINCRBY', KEYS[3], ARGV[2], -1) <= 0 then
  redis.call('HDEL', KEYS[3], ARGV[2])
end
return 1
