-- KEYS: the batch's record, the team's batch idempotency hash, the team's batch-created index, then
-- the keys of the batch's jobs. ARGV: the batch id, its Idempotency-Key ("" or "=" + key).
-- Answers 'expired', 'gone' (no such record: another replica expired it), or 'jobs_left' (a job of the
-- batch is still stored: kept). Job keys are checked one by one: EXISTS on one key each, and the first
-- one found ends the check.
local id = ARGV[1]
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[3], id)
  return 'gone'
end
for i = 4, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then return 'jobs_left' end
end
redis.call('DEL', KEYS[1])
if ARGV[2] ~= '' then
  local idem = string.sub(ARGV[2], 2)
  if redis.call('HGET', KEYS[2], idem) == id then redis.call('HDEL', KEYS[2], idem) end
end
redis.call('ZREM', KEYS[3], id)
return 'expired'
