-- GCRA rate limit of one key (engine/rate_limit.py is the same arithmetic, and the reference).
-- KEYS[1]: the key's theoretical arrival time (TAT), ms on Redis' clock. ARGV[1]: rate per
-- second (burst of the same size, window 1 s).
-- Returns {allowed 1/0, remaining, retry after ms, reset ms} (integers, rounded up).
-- Redis' own clock: instances with skewed clocks share one limit correctly.
local T = redis.call('TIME')
local now = tonumber(T[1]) * 1000 + tonumber(T[2]) / 1000
local rate = tonumber(ARGV[1])
local interval = 1000 / rate
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then
  tat = now
end
local new_tat = tat + interval
local allow_at = new_tat - 1000
if now < allow_at then
  return {0, 0, math.ceil(allow_at - now), math.ceil(tat - now)}
end
-- The key lives as long as it matters: past its TAT it means "full quota", as if absent.
redis.call('SET', KEYS[1], string.format('%.3f', new_tat), 'PX', math.ceil(new_tat - now) + 1)
-- (1e-6: whole intervals despite floating point, as in rate_limit.py)
return {1, math.floor((now - allow_at) / interval + 1e-6), 0, math.ceil(new_tat - now)}
