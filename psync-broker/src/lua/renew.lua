-- Renews a worker's leases: resets the idle time of each entry still
-- pending for it, and only those (an entry taken by another worker after
-- its lease lapsed stays taken: claiming it back would run it twice
-- more). Atomic, so no claim can come between the check and the renewal.
-- KEYS: stream. ARGV: group, consumer, entry ids.
-- Returns the number renewed.
local n = 0
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    n = n + 1
  end
end
return n
