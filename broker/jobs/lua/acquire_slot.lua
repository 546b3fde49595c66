-- ARGV[op..]: attempt id, its slot lapses at, job id, team, its place's score, "weight guaranteed".
-- Returns {1, jobs granted a slot besides this one...} when the slot is taken, {0, granted...} when the
-- job keeps (or takes) its place in the queue.
local attempt, lapses, job, team = ARGV[op], ARGV[op + 1], ARGV[op + 2], ARGV[op + 3]
if redis.call('ZSCORE', KEYS[1], attempt) then
  redis.call('ZADD', KEYS[1], lapses, attempt)
  return {1}
end
if not redis.call('HGET', KEYS[7], job) then
  redis.call('ZADD', queue_of[team], ARGV[op + 4], job)
  redis.call('HSET', KEYS[7], job, team)
  redis.call('HINCRBY', KEYS[8], team, 1)
  redis.call('HSET', KEYS[5], team, ARGV[op + 5]) -- the share of the team's latest queued job
end
local woken = grant()
if not redis.call('ZSCORE', KEYS[4], job) then
  local answer = {0}
  for _, other in ipairs(woken) do answer[#answer + 1] = other end
  return answer
end
redis.call('ZREM', KEYS[4], job)
redis.call('HDEL', KEYS[3], job)
unqueue(job)
redis.call('ZADD', KEYS[1], lapses, attempt)
redis.call('HSET', KEYS[3], attempt, team)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tostring(now - 60))
redis.call('ZADD', KEYS[2], ARGV[1], attempt)
local answer = {1}
for _, other in ipairs(woken) do
  if other ~= job then answer[#answer + 1] = other end
end
return answer
