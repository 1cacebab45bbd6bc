-- A new stream's admission and, when it is admitted, its presence change, in one round trip
-- (a reconnect storm would otherwise pay two per stream). Composed by limits.py after two
-- functions that wrap the unchanged scripts: admit(KEYS, ARGV) = _streams.lua +
-- stream_admit.lua, change(KEYS, ARGV) = _log.lua + _presence.lua + presence_change.lua, each
-- with its own KEYS and ARGV as parameters (shadowing the globals).
-- KEYS: 1-3 the admission's, 4-10 the presence change's. ARGV: 1-4 the admission's, 5-... the
-- presence change's. Returns {admission status, open streams, presence status, bus message}:
-- the presence change runs only when the stream is admitted (1); refused (0) or "re-sync
-- first" (-1) change nothing, and then the presence status is -1.
local admit_args, change_args = {}, {}
for i = 1, 4 do
  admit_args[i] = ARGV[i]
end
for i = 5, #ARGV do
  change_args[#change_args + 1] = ARGV[i]
end
local admitted = admit({KEYS[1], KEYS[2], KEYS[3]}, admit_args)
if admitted[1] ~= 1 then
  return {admitted[1], admitted[2], -1, ''}
end
local changed = change({KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]}, change_args)
return {1, admitted[2], changed[1], changed[2]}
