-- A running task spawns a child: once per (parent, child id).
-- KEYS: parent's record, child's record, stream, state.
-- ARGV: child id, parent id, child task bytes.
-- 0: nothing done (spawned before, the parent is done or gone: a late
-- delivery of it, or the run has ended); 1: counted and queued.
if redis.call('HEXISTS', KEYS[4], 'end') == 1 then
  return 0
end
if redis.call('HEXISTS', KEYS[1], 'n') == 0 or redis.call('HEXISTS', KEYS[1], 'd') == 1 then
  return 0
end
if redis.call('HSETNX', KEYS[1], 'c:' .. ARGV[1], '1') == 0 then
  return 0
end
redis.call('HINCRBY', KEYS[1], 'n', 1)
redis.call('HSET', KEYS[2], 'p', ARGV[2], 'n', 1)
redis.call('XADD', KEYS[3], '*', 'id', ARGV[1], 'task', ARGV[3])
return 1
