-- KEYS: due, this claim's token key. ARGV: base, now, lease until, token, encoded owner, limit.
-- Leases up to `limit` jobs due at `now`, longest due first; each one's score becomes its lease's end,
-- so a job whose runner dies is due again the moment its lease lapses.
local replayed = redis.call('GET', KEYS[2])
local out = {}
if replayed then
  for id in string.gmatch(replayed, '[^,]+') do emit(out, id) end
  return out
end
local now, owner, limit = tonumber(ARGV[2]), ARGV[5], tonumber(ARGV[6])
local taken = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, limit)) do
  local jk = key('job', id)
  if redis.call('EXISTS', jk) == 0 then
    redis.call('ZREM', KEYS[1], id)
  else
    redis.call('HINCRBY', jk, 'v', 1)
    redis.call('HSET', jk, 'o', owner, 'l', ARGV[3], 'w', ARGV[4])
    redis.call('ZADD', KEYS[1], ARGV[3], id)
    table.insert(taken, id)
    emit(out, id)
  end
end
-- Kept only as long as redis-py may resend this call.
if #taken > 0 then redis.call('SET', KEYS[2], table.concat(taken, ','), 'EX', 60) end
return out
