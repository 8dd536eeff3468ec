-- `--max-delete` over the run's workers: takes ARGV[1] deletions of the
-- limit ARGV[2] when they fit; nothing for a run that has ended, or
-- that the server does not know (restarted without its data: the count
-- would start again from 0).
-- KEYS: state. Returns 1 when granted, else 0.
if redis.call('HEXISTS', KEYS[1], 'end') == 1
  or redis.call('HEXISTS', KEYS[1], 'spec') == 0 then
  return 0
end
local used = tonumber(redis.call('HGET', KEYS[1], 'deletions') or '0')
if used + tonumber(ARGV[1]) > tonumber(ARGV[2]) then
  return 0
end
redis.call('HINCRBY', KEYS[1], 'deletions', ARGV[1])
return 1
