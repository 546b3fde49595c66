-- KEYS: job hash, the team's idempotency hash, then the indexes that name the job: ids, team, created,
-- created-team, status, team-status (of its ended status), due, tasks, reconcile, unreadable; then the
-- ledger's day set, the ledger hash of the job's day, and (optional) the set of jobs naming its upload.
-- ARGV: version, id, ended status, idempotency key ("" or "=" + key), day score, day, the number of
-- task fields, the task fields ("<provider>:<task id>"), then ledger field / increment pairs.
-- Answers 'expired', or why not: 'gone', 'changed' (another version or status), 'reconciling'.
local jk, id = KEYS[1], ARGV[2]
local cur = redis.call('HMGET', jk, 'v', 's')
if not cur[1] then return 'gone' end
if cur[1] ~= ARGV[1] or cur[2] ~= ARGV[3] then return 'changed' end
if redis.call('ZSCORE', KEYS[11], id) then return 'reconciling' end
redis.call('DEL', jk)
if ARGV[4] ~= '' then
  local idem = string.sub(ARGV[4], 2)
  if redis.call('HGET', KEYS[2], idem) == id then redis.call('HDEL', KEYS[2], idem) end
end
for i = 3, 9 do redis.call('ZREM', KEYS[i], id) end
redis.call('ZREM', KEYS[12], id)
local tasks = tonumber(ARGV[7])
for i = 8, 7 + tasks do
  if redis.call('HGET', KEYS[10], ARGV[i]) == id then redis.call('HDEL', KEYS[10], ARGV[i]) end
end
for i = 8 + tasks, #ARGV - 1, 2 do redis.call('HINCRBY', KEYS[14], ARGV[i], ARGV[i + 1]) end
redis.call('ZADD', KEYS[13], ARGV[5], ARGV[6])
if KEYS[15] then redis.call('SREM', KEYS[15], id) end
return 'expired'
