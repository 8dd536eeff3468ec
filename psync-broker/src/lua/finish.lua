-- One delivery of a task ended (done): everything it did, in one atomic
-- call, so that it counts once however often it was delivered. Its
-- children not spawned yet are spawned (once per id), its deferred task
-- set, its counts added to the run's and its events logged (only by the
-- delivery that completes it), its completion passed up the tree (see
-- `complete` above), and its stream entry acknowledged and deleted.
-- A run that has ended (complete, cancelled, stopped) takes nothing.
-- KEYS: state, stream, the task's record, counts, events.
-- ARGV: prefix, group, entry id ('' for none), task id, worker, events
-- maxlen, ttl (s), then: nsent, {child id} x nsent (the children sent
-- while it ran), nspawn, {child id, child bytes} x nspawn,
-- deferred id ('' for none), deferred bytes, ncounts, {field, n} x
-- ncounts, nevents, {level, event JSON} x nevents.
-- Returns {code, id, refused}: code and id as `complete`, or 4 when a
-- child sent while it ran is not among its children (a server that lost
-- its last writes): nothing done, the task must run again; refused 1 when
-- the task deferred another task than the one it deferred before.
local state, stream, key = KEYS[1], KEYS[2], KEYS[3]
local prefix, group, entry, id, worker = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local maxlen, ttl = ARGV[6], ARGV[7]
local function ack()
  if entry ~= '' then
    redis.call('XACK', stream, group, entry)
    redis.call('XDEL', stream, entry)
  end
end
if redis.call('HEXISTS', state, 'end') == 1 then
  return {0, '', 0}
end
local rec = redis.call('HMGET', key, 'n', 'd')
if rec[1] == false or rec[2] ~= false then
  ack()
  return {0, '', 0}
end
local i = 8
local nsent = tonumber(ARGV[i])
for k = 1, nsent do
  if redis.call('HEXISTS', key, 'c:' .. ARGV[i + k]) == 0 then
    return {4, '', 0}
  end
end
i = i + nsent + 1
for _ = 1, tonumber(ARGV[i]) do
  local cid, bytes = ARGV[i + 1], ARGV[i + 2]
  i = i + 2
  if redis.call('HSETNX', key, 'c:' .. cid, '1') == 1 then
    redis.call('HINCRBY', key, 'n', 1)
    redis.call('HSET', prefix .. 't:' .. cid, 'p', id, 'n', 1)
    redis.call('XADD', stream, '*', 'id', cid, 'task', bytes)
  end
end
i = i + 1
local fid, fbytes = ARGV[i], ARGV[i + 1]
i = i + 2
local refused = 0
if fid ~= '' then
  local cur = redis.call('HGET', key, 'fid')
  if cur == false then
    redis.call('HSET', key, 'fid', fid, 'f', fbytes)
  elseif cur ~= fid then
    refused = 1
  end
end
for _ = 1, tonumber(ARGV[i]) do
  redis.call('HINCRBY', KEYS[4], ARGV[i + 1], ARGV[i + 2])
  i = i + 2
end
i = i + 1
for _ = 1, tonumber(ARGV[i]) do
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', maxlen, '*',
    'l', ARGV[i + 1], 'w', worker, 'e', ARGV[i + 2])
  i = i + 2
end
local r = complete(prefix, state, stream, key, ttl)
ack()
return {r[1], r[2], refused}
