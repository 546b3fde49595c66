-- KEYS: the job's reservation, then one hash per window, then the open-reservations set. ARGV: amount,
-- token, the windows' limits, then their keys, then the job id and the time. Returns {ok, remaining...}.
local n = #KEYS - 2
local amount = tonumber(ARGV[1])
local replay = redis.call('HGET', KEYS[1], 'token') == ARGV[2]
local remaining, fits = {}, true
for i = 1, n do
  local w = redis.call('HMGET', KEYS[i + 1], 'spent', 'reserved')
  remaining[i] = tonumber(ARGV[2 + i]) - (tonumber(w[1]) or 0) - (tonumber(w[2]) or 0)
  if remaining[i] < amount then fits = false end
end
if replay then return {1, unpack(remaining)} end
if not fits then return {0, unpack(remaining)} end
for i = 1, n do
  redis.call('HINCRBY', KEYS[i + 1], 'reserved', ARGV[1])
  redis.call('HINCRBY', KEYS[1], 'w:' .. ARGV[2 + n + i], ARGV[1])
  remaining[i] = remaining[i] - amount
end
redis.call('HSET', KEYS[1], 'token', ARGV[2])
redis.call('ZADD', KEYS[#KEYS], 'NX', ARGV[#ARGV], ARGV[#ARGV - 1])
return {1, unpack(remaining)}
