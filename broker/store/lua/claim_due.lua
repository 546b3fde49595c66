-- KEYS: due, this claim's token key, then the candidates' job hashes. ARGV: now, lease until, token,
-- encoded owner, limit, then the candidates' ids (one per job hash), longest due first.
-- The caller read the candidates from `due` just before; each is checked again here, so one that another
-- claim took in between (its score now a lease's end) or that has ended is skipped. Leases up to `limit`;
-- each one's score becomes its lease's end, so a job whose runner dies is due again once its lease lapses.
-- Answers how many candidates were skipped, then id, r, v, o, l of each job leased.
local replayed = redis.call('GET', KEYS[2])
local out = {0}
if replayed then
  for id in string.gmatch(replayed, '[^,]+') do
    for i = 6, #ARGV do
      if ARGV[i] == id then emit(out, id, KEYS[i - 3]) end
    end
  end
  return out
end
local now, owner, limit = tonumber(ARGV[1]), ARGV[4], tonumber(ARGV[5])
local taken = {}
for i = 6, #ARGV do
  if #taken >= limit then break end
  local id = ARGV[i]
  local jk = KEYS[i - 3]
  local score = redis.call('ZSCORE', KEYS[1], id)
  if not score or tonumber(score) > now then
    out[1] = out[1] + 1
  elseif redis.call('EXISTS', jk) == 0 then
    redis.call('ZREM', KEYS[1], id)
    out[1] = out[1] + 1
  else
    redis.call('HINCRBY', jk, 'v', 1)
    redis.call('HSET', jk, 'o', owner, 'l', ARGV[2], 'w', ARGV[3])
    redis.call('ZADD', KEYS[1], ARGV[2], id)
    table.insert(taken, id)
    emit(out, id, jk)
  end
end
-- Kept only as long as redis-py may resend this call.
if #taken > 0 then redis.call('SET', KEYS[2], table.concat(taken, ','), 'EX', 60) end
return out
