-- KEYS: the job's reservation, the open-reservations set, then the hash of each window in ARGV[4..].
-- ARGV: actual spend, the job id, how long to keep the settled reservation, then the window keys the
-- caller found in the reservation. The hash keeps each window's still-reserved amount (0 once released)
-- and `spent`, what this job has put into the windows' spend: settling again with a corrected amount (a
-- reconciled charge) books only the difference. Returns 1, or 0 with nothing written when the
-- reservation names a window KEYS does not declare (a reservation made since the caller read it).
local all = redis.call('HGETALL', KEYS[1])
local declared = {}
for i = 4, #ARGV do declared['w:' .. ARGV[i]] = KEYS[i - 1] end
for i = 1, #all, 2 do
  if string.sub(all[i], 1, 2) == 'w:' and not declared[all[i]] then return 0 end
end
local actual = tonumber(ARGV[1])
local before = tonumber(redis.call('HGET', KEYS[1], 'spent') or '0')
for i = 1, #all, 2 do
  local wk = declared[all[i]]
  if wk then
    if tonumber(all[i + 1]) ~= 0 then
      redis.call('HINCRBY', wk, 'reserved', -tonumber(all[i + 1]))
      redis.call('HSET', KEYS[1], all[i], 0)
    end
    if actual ~= before then redis.call('HINCRBY', wk, 'spent', actual - before) end
  end
end
if #all > 0 then
  redis.call('HSET', KEYS[1], 'spent', actual)
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
