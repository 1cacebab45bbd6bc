-- Prelude of every script that reads or appends to the event log (prepended by redis.py).
-- Convention: KEYS[1] = meta hash {epoch, seq}, KEYS[2] = log stream;
--             ARGV[1] = a fresh random epoch token (used only when the log has to start over),
--                       optionally followed by '/<epoch>/<seq>': the highest seq the caller
--                       has seen of that epoch (its high-water mark),
--             ARGV[2] = log length (exact MAXLEN), ARGV[3] = the bus channel.
-- Epoch, seq and log are one unit: the meta hash holds both epoch and seq, and when it is gone
-- (Redis restarted without persistence, FLUSHALL, eviction) a new epoch starts with an empty
-- log, so an old cursor can never be mistaken for a position in the new history.

-- A failover to a replica that missed the last writes (replication is asynchronous) leaves
-- the same epoch with a seq behind numbers already handed out: the next events would reuse
-- them, and clients holding them would skip the new ones. A caller whose high-water mark of
-- this epoch is past the seq starts a new epoch instead, and marks the board incomplete (it
-- may lack rows too) so that it is rebuilt from SQL. The ready marker's name is the meta
-- key's with 'meta' replaced (same prefix, same hash slot).
local function ensure_meta()
  local token, seen_epoch, seen_seq = string.match(ARGV[1], '^([^/]+)/([^/]+)/(%d+)$')
  if not token then
    token = ARGV[1]
  end
  local m = redis.call('HMGET', KEYS[1], 'epoch', 'seq')
  if m[1] and m[2] then
    if m[1] ~= seen_epoch or tonumber(m[2]) >= tonumber(seen_seq) then
      return m[1], tonumber(m[2])
    end
    redis.call('DEL', string.sub(KEYS[1], 1, -5) .. 'board:ready')
  end
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', token, 'seq', 0)
  return token, 0
end

local function fmt(n)
  return string.format('%d', n)
end

local EPOCH, SEQ, FIRST
local PARTS = {}

-- Append one event. rooms_json and data_json arrive pre-encoded (Python's json.dumps), so the
-- text is byte-identical to base.build_event(); name comes from a safe alphabet.
local function append(name, rooms_json, data_json, ts)
  if not EPOCH then
    EPOCH, SEQ = ensure_meta()
  end
  SEQ = SEQ + 1
  local s = fmt(SEQ)
  local text = '{"id":"' .. EPOCH .. '.' .. s .. '","rooms":' .. rooms_json .. ',"event":"' ..
    name .. '","data":' .. data_json .. ',"ts":' .. ts .. '}'
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[2], s .. '-0', 'e', name, 'r', rooms_json, 't', text)
  if not FIRST then
    FIRST = SEQ
  end
  PARTS[#PARTS + 1] = name
  PARTS[#PARTS + 1] = rooms_json
  PARTS[#PARTS + 1] = text
end

-- Store the new seq and wake every instance: one bus message per script run,
-- "<epoch>\n<first seq>\n<count>\n" then "<name>\n<rooms json>\n<envelope>" per event
-- (none of them can hold a raw newline). Returns the message ('' when nothing was appended).
local function flush()
  if not FIRST then
    return ''
  end
  redis.call('HSET', KEYS[1], 'seq', fmt(SEQ))
  local msg = EPOCH .. '\n' .. fmt(FIRST) .. '\n' .. fmt(SEQ - FIRST + 1) .. '\n' ..
    table.concat(PARTS, '\n')
  -- BUS_PUBLISH: PUBLISH, or SPUBLISH on Redis Cluster (set by scripts.py)
  redis.call(BUS_PUBLISH, ARGV[3], msg)
  return msg
end
