-- A batch's reservation: every job's amount under its own id, all or none (the sum must fit each
-- window). KEYS: the open-reservations set, then one hash per window (n), then each job's reservation.
-- ARGV: n, the sum, token, the time, the windows' limits (n), their keys (n), the job ids, the amounts.
-- Returns {ok, remaining per window}. A replay (same token) answers ok without reserving again.
local n = tonumber(ARGV[1])
local total = tonumber(ARGV[2])
local m = #KEYS - 1 - n
local remaining, fits = {}, true
for i = 1, n do
  local w = redis.call('HMGET', KEYS[1 + i], 'spent', 'reserved')
  remaining[i] = tonumber(ARGV[4 + i]) - (tonumber(w[1]) or 0) - (tonumber(w[2]) or 0)
  if remaining[i] < total then fits = false end
end
if m > 0 and redis.call('HGET', KEYS[2 + n], 'token') == ARGV[3] then return {1, unpack(remaining)} end
if not fits then return {0, unpack(remaining)} end
for i = 1, n do
  redis.call('HINCRBY', KEYS[1 + i], 'reserved', total)
  remaining[i] = remaining[i] - total
end
for j = 1, m do
  local res = KEYS[1 + n + j]
  for i = 1, n do
    redis.call('HINCRBY', res, 'w:' .. ARGV[4 + n + i], ARGV[4 + 2 * n + m + j])
  end
  redis.call('HSET', res, 'token', ARGV[3])
  redis.call('ZADD', KEYS[1], 'NX', ARGV[4], ARGV[4 + 2 * n + j])
end
return {1, unpack(remaining)}
