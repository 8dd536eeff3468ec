-- Shared by the scripts that complete tasks (prepended to each): a task's
-- own work is done; count it once and pass completion up the tree as the
-- local transport does. A record whose count reaches 0 is deleted; its
-- deferred task, if any, takes its place in its parent's count (queued
-- with a record of count 1 under that parent); otherwise the parent's
-- count drops, and so on up; the root's reaching 0 completes the run,
-- which ends it: `state` gets `complete` and `end`, the task stream (and
-- its consumer group) is deleted, the run leaves the set of active runs,
-- and its state, counters and event log expire after `ttl` seconds.
-- Ancestors' records are named from the prefix: every key of a run has
-- the run's hash tag, so they share one slot.
-- Returns {0, ''}: nothing done (done before, or gone); {1, ''}: counted,
-- work remains; {2, id}: the deferred task `id` was queued; {3, ''}: the
-- run is complete.
local function complete(prefix, state, stream, key, ttl)
  local rec = redis.call('HMGET', key, 'p', 'n', 'd', 'fid', 'f')
  if rec[2] == false or rec[3] ~= false then
    return {0, ''}
  end
  local parent, fid, f = rec[1], rec[4], rec[5]
  local n = tonumber(rec[2]) - 1
  redis.call('DEL', key)
  if n > 0 then
    -- Kept without the set of spawned ids: a done task spawns nothing.
    redis.call('HSET', key, 'p', parent, 'n', n, 'd', '1')
    if fid then
      redis.call('HSET', key, 'fid', fid, 'f', f)
    end
    return {1, ''}
  end
  while true do
    if fid then
      redis.call('HSET', prefix .. 't:' .. fid, 'p', parent, 'n', 1)
      redis.call('XADD', stream, '*', 'id', fid, 'task', f)
      return {2, fid}
    end
    if parent == '' then
      local t = redis.call('TIME')
      redis.call('HSET', state, 'complete', '1', 'end', 'done',
        'ended', t[1] * 1000 + math.floor(t[2] / 1000))
      redis.call('DEL', stream)
      local run = string.match(prefix, '{(%x+)}')
      redis.call('SREM', 'psync:runs', run)
      redis.call('ZADD', 'psync:ended', t[1] * 1000 + math.floor(t[2] / 1000), run)
      -- The log's last line: wakes a follower blocked on the log at once.
      redis.call('XADD', prefix .. 'events', '*', 'l', 'info', 'w', 'broker', 'm', 'run complete')
      if tonumber(ttl) > 0 then
        for _, k in ipairs({state, prefix .. 'counts', prefix .. 'events'}) do
          redis.call('EXPIRE', k, ttl)
        end
      end
      return {3, ''}
    end
    key = prefix .. 't:' .. parent
    rec = redis.call('HMGET', key, 'p', 'fid', 'f')
    if rec[1] == false then
      return redis.error_reply('psync: no record of task ' .. parent)
    end
    if redis.call('HINCRBY', key, 'n', -1) > 0 then
      return {1, ''}
    end
    parent, fid, f = rec[1], rec[2], rec[3]
    redis.call('DEL', key)
  end
end
