-- ARGV[op..]: attempt id, its slot lapses at, job id, team, its place's score, "weight guaranteed".
-- Returns {1, jobs granted a slot besides this one...} when the slot is taken, {0, granted...} when the
-- job keeps (or takes) its place in the queue.
local attempt, lapses, job, team = ARGV[op], ARGV[op + 1], ARGV[op + 2], ARGV[op + 3]
if redis.call('ZSCORE', KEYS[1], attempt) then
  redis.call('ZADD', KEYS[1], lapses, attempt)
  return {1}
end
lapse(KEYS[1])
lapse(KEYS[4])
local granted = redis.call('ZCARD', KEYS[4])
if redis.call('ZSCORE', KEYS[4], job) then
  take(attempt, lapses, job, team)
  return {1}
end
-- Nobody else waits and a slot is free: take it (the common case, in O(1): no queue to order).
local others = redis.call('HLEN', KEYS[7]) - granted
if redis.call('HEXISTS', KEYS[7], job) == 1 then others = others - 1 end
if others <= 0 and free_now() > 0 then
  redis.call('HSET', KEYS[5], team, ARGV[op + 5])
  take(attempt, lapses, job, team)
  return {1}
end
if redis.call('HEXISTS', KEYS[7], job) == 0 then
  redis.call('ZADD', queue_of[team], ARGV[op + 4], job)
  redis.call('HSET', KEYS[7], job, team)
  redis.call('HSET', KEYS[5], team, ARGV[op + 5]) -- the share of the team's latest queued job
  if redis.call('HINCRBY', KEYS[8], team, 1) == 1 then place(team, (share_of(team))) end
end
local woken = grant()
local answer = {0}
if redis.call('ZSCORE', KEYS[4], job) then
  take(attempt, lapses, job, team)
  answer[1] = 1
end
for _, other in ipairs(woken) do
  if other ~= job then answer[#answer + 1] = other end
end
return answer
