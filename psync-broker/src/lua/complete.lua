-- A task's own work is done (see `complete` above).
-- KEYS: state, stream, the task's record. ARGV: key prefix, ttl (s).
return complete(ARGV[1], KEYS[1], KEYS[2], KEYS[3], ARGV[2])
