-- A running task sets the task to run when it and its subtree are done.
-- KEYS: the task's record. ARGV: deferred id, deferred task bytes.
-- 1: set; 0: nothing done (set before with this id, or the task's
-- subtree is done: a late delivery); -1: refused (another deferred task,
-- or the task is done without one).
if redis.call('HEXISTS', KEYS[1], 'n') == 0 then
  return 0
end
local fid = redis.call('HGET', KEYS[1], 'fid')
if fid == false then
  if redis.call('HEXISTS', KEYS[1], 'd') == 1 then
    return -1
  end
  redis.call('HSET', KEYS[1], 'fid', ARGV[1], 'f', ARGV[2])
  return 1
end
if fid == ARGV[1] then
  return 0
end
return -1
