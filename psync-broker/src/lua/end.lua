-- Ends a run that did not complete (cancelled, or stopped by a target
-- that cannot be written), once: `end` and the time in its state, its
-- task stream (and group) deleted, out of the set of active runs, into
-- the set of ended ones, its state, counters and event log expiring.
-- Its task records are deleted by the caller (SCAN): no script writes
-- to a run whose state has `end`.
-- KEYS: state, stream, counts, events. ARGV: how, stopped (JSON or ''),
-- run id (hex), ttl (s).
if redis.call('HEXISTS', KEYS[1], 'end') == 1 then
  return 0
end
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('HSET', KEYS[1], 'end', ARGV[1], 'ended', now)
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[1], 'stopped', ARGV[2])
end
redis.call('DEL', KEYS[2])
redis.call('SREM', 'psync:runs', ARGV[3])
redis.call('ZADD', 'psync:ended', now, ARGV[3])
-- The log's last line: wakes a follower blocked on the log at once.
redis.call('XADD', KEYS[4], '*', 'l', 'info', 'w', 'broker', 'm', 'run ' .. ARGV[1])
for _, k in ipairs({KEYS[1], KEYS[3], KEYS[4]}) do
  redis.call('EXPIRE', k, ARGV[4])
end
return 1
