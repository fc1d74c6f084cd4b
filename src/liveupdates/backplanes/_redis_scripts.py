"""The Lua scripts of the Redis backplane: publish, replay and read, each atomic in Redis.

Every script touches only the keys of one stream (one hash tag, so one Redis Cluster slot);
the channel it publishes to shares that tag, so ``SPUBLISH`` stays on the slot's master.
"""

from __future__ import annotations

from typing import Final

# The stream's epoch and offset; a new epoch when the meta hash is missing or was written by
# another Redis process (its state may be older than what clients saw). A new epoch empties the
# log, so the log only ever holds one epoch, with consecutive offsets. `INFO server` is the only
# way a script can tell which Redis process runs it (its run_id): a restart from a snapshot or a
# promoted replica changes it, and that is what makes a new epoch after those.
LOCATE: Final = """
local function locate(meta, log, nonce, now)
  local server = string.match(redis.call('INFO', 'server'), 'run_id:(%w+)')
  local state = redis.call('HMGET', meta, 'epoch', 'offset', 'server')
  if state[1] and state[3] == server then
    return state[1], tonumber(state[2]), server, false
  end
  redis.call('DEL', log)
  return string.format('%x%05x', now[1], now[2]) .. nonce, 0, server, true
end
local function millis(now) return now[1] * 1000 + math.floor(now[2] / 1000) end
"""

# KEYS: meta, log. ARGV: channel, message head, entry, history_size, ttl_ms, nonce, and the
# publish command ('PUBLISH', or 'SPUBLISH' on a cluster).
# XADD is the first write that needs memory, so an OOM error leaves the stream untouched.
PUBLISH_LUA: Final = (
    LOCATE
    + """
local now = redis.call('TIME')
local epoch, offset, server = locate(KEYS[1], KEYS[2], ARGV[6], now)
offset = offset + 1
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'o', offset, 'p', ARGV[3])
redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', offset, 'server', server)
local ttl = tonumber(ARGV[5])
local horizon = millis(now) - ttl
if horizon > 0 then
  redis.call('XTRIM', KEYS[2], 'MINID', '~', string.format('%.0f', horizon))
end
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call(ARGV[7], ARGV[1], ARGV[2] .. cmsgpack.pack(epoch, offset) .. ARGV[3])
return {epoch, offset}
"""
)

# KEYS: meta, log. ARGV: since epoch ('' for none), since offset, history_size, ttl_ms, nonce,
# chunk. Returns {epoch, offset, complete, oldest id allowed (ms), entries}: `entries` are the
# newest min(missed, chunk) entries, newest first; the client reads the rest with READ_LUA.
# Only the newest `history_size` entries younger than `ttl_ms` (by Redis' clock) count.
REPLAY_LUA: Final = (
    LOCATE
    + """
local now = redis.call('TIME')
local epoch, offset, server, new = locate(KEYS[1], KEYS[2], ARGV[5], now)
local ttl = tonumber(ARGV[4])
if new then redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 0, 'server', server) end
redis.call('PEXPIRE', KEYS[1], ttl)
local horizon = string.format('%.0f', millis(now) - ttl)
if ARGV[1] == '' then return {epoch, offset, 1, horizon, {}} end
local since = tonumber(ARGV[2])
local missed = offset - since
if ARGV[1] ~= epoch or missed < 0 or missed > tonumber(ARGV[3]) then
  return {epoch, offset, 0, horizon, {}}
end
if missed == 0 then return {epoch, offset, 1, horizon, {}} end
local count = math.min(missed, tonumber(ARGV[6]))
return {epoch, offset, 1, horizon, redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', count)}
"""
)

# KEYS: meta, log. ARGV: the id to read below (exclusive), count. Returns {the stream's
# epoch (false when none), up to `count` entries older than the id, newest first}: the epoch
# read with the entries tells the client whether they still belong to the epoch it replays.
READ_LUA: Final = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
return {epoch, redis.call('XREVRANGE', KEYS[2], '(' .. ARGV[1], '-', 'COUNT', ARGV[2])}
"""

# KEYS: meta, log. ARGV: channel, publish command, subscribe command. Which commands the
# backplane needs that this ACL user may not run on these keys and channel (Redis >= 7.0).
PERMISSIONS_LUA: Final = """
local denied = {}
local function need(...)
  if not redis.acl_check_cmd(...) then table.insert(denied, table.concat({...}, ' ')) end
end
need('info', 'server')
need('time')
need('hmget', KEYS[1], 'epoch')
need('hset', KEYS[1], 'epoch', '0')
need('hget', KEYS[1], 'epoch')
need('pexpire', KEYS[1], '1')
need('del', KEYS[2])
need('xadd', KEYS[2], '*', 'o', '0')
need('xtrim', KEYS[2], 'MINID', '0')
need('xrevrange', KEYS[2], '+', '-')
need('pexpire', KEYS[2], '1')
need(ARGV[2], ARGV[1], '')
need(ARGV[3], ARGV[1])
return denied
"""
