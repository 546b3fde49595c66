-- KEYS: the job's reservation, the open-reservations set. ARGV: actual spend, the `{P:budget}:w:` base
-- of window keys, the job id, how long to keep the settled reservation. The hash keeps each window's
-- still-reserved amount (0 once released) and `spent`, what this job has put into the windows' spend:
-- settling again with a corrected amount (a reconciled charge) books only the difference.
local all = redis.call('HGETALL', KEYS[1])
local actual = tonumber(ARGV[1])
local before = tonumber(redis.call('HGET', KEYS[1], 'spent') or '0')
for i = 1, #all, 2 do
  if string.sub(all[i], 1, 2) == 'w:' then
    local wk = ARGV[2] .. string.sub(all[i], 3)
    if tonumber(all[i + 1]) ~= 0 then
      redis.call('HINCRBY', wk, 'reserved', -tonumber(all[i + 1]))
      redis.call('HSET', KEYS[1], all[i], 0)
    end
    if actual ~= before then redis.call('HINCRBY', wk, 'spent', actual - before) end
  end
end
if #all > 0 then
  redis.call('HSET', KEYS[1], 'spent', actual)
  redis.call('EXPIRE', KEYS[1], ARGV[4])
end
redis.call('ZREM', KEYS[2], ARGV[3])
return 1
