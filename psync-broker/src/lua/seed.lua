-- Starts a run with its root task, once.
-- KEYS: state, root's record, stream. ARGV: root id, root task bytes.
if redis.call('HSETNX', KEYS[1], 'root', ARGV[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[2], 'p', '', 'n', 1)
redis.call('XADD', KEYS[3], '*', 'id', ARGV[1], 'task', ARGV[2])
return 1
