-- `--bwlimit` over the run's workers: books ARGV[1] bytes at ARGV[2]
-- bytes/s after the bytes booked before, on the server's clock (one for
-- every node). An idle spell buys no burst: a schedule in the past
-- starts again from now. Nothing for a run that has ended; an error for
-- one the server does not know (restarted without its data), written
-- nowhere: the pacer paces on its own.
-- KEYS: state. Returns the microseconds until the bytes are due.
if redis.call('HEXISTS', KEYS[1], 'end') == 1 then
  return 0
end
if redis.call('HEXISTS', KEYS[1], 'spec') == 0 then
  return redis.error_reply('no such run')
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local due = tonumber(redis.call('HGET', KEYS[1], 'bwdue') or '0')
if due < now then
  due = now
end
due = due + math.floor(tonumber(ARGV[1]) * 1000000 / tonumber(ARGV[2]))
redis.call('HSET', KEYS[1], 'bwdue', string.format('%.0f', due))
return due - now
