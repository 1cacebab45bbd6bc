-- Replace this instance's counts with its local truth. ARGV: 2.. subject, count pairs.
redis.call('DEL', KEYS[3])
redis.call('HSET', KEYS[3], WHOLE, '1')
for i = 2, #ARGV, 2 do
  redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
end
redis.call('SADD', KEYS[2], ARGV[1])
return 1
