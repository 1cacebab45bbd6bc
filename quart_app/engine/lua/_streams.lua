-- Prelude of the stream-count scripts (PROTOCOL 3.6: open streams per user, cluster-wide).
-- KEYS[1] presence:instances (zset instance id -> deadline ms; the presence scripts keep it:
-- heartbeats renew it, a crashed instance's deadline passes, a sweep or a stop removes it),
-- KEYS[2] limits:instances (set: ids of instances that count streams),
-- KEYS[3] this instance's limits:instance:<id> hash (subject -> its open streams here; the
-- field '#' marks the hash as whole: without it, this instance's counts were lost, or removed
-- by another instance while this one looked dead, and Python re-syncs them).
-- ARGV[1] this instance id.
local WHOLE = '#'
