-- KEYS: job hash. ARGV: base, expected version, new version, record, status, ready ("" once ended), owner,
-- lease, request hash, token, job id. Returns 1 when written (now or by this token's first run), else 0.
local jk = KEYS[1]
local cur = redis.call('HMGET', jk, 'v', 's', 't', 'w')
if not cur[1] then return 0 end
if cur[1] ~= ARGV[2] then
  if cur[1] == ARGV[3] and cur[4] == ARGV[10] then return 1 end
  return 0
end
local id = ARGV[11]
redis.call('HSET', jk, 'r', ARGV[4], 'v', ARGV[3], 's', ARGV[5], 'h', ARGV[9], 'w', ARGV[10])
set_lease(jk, ARGV[7], ARGV[8])
if cur[2] ~= ARGV[5] then
  index('ZREM', id, cur[3], cur[2])
  redis.call('ZADD', key('status', ARGV[5]), 0, id)
  redis.call('ZADD', key('team-status', cur[3], ARGV[5]), 0, id)
end
place(id, ARGV[6])
return 1
