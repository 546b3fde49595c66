-- KEYS: job hash, the team's idempotency hash. ARGV: base, id, team, status, ready ("" once ended), version,
-- record, owner, lease, created score, idempotency key ("" or "=" + key), request hash, token.
local id, team, status, idem = ARGV[2], ARGV[3], ARGV[4], string.sub(ARGV[11], 2)
local has_idem = ARGV[11] ~= ''
if has_idem then
  local existing = redis.call('HGET', KEYS[2], idem)
  if existing == id then return {'created'} end
  if existing then
    local jk = key('job', existing)
    if redis.call('HGET', jk, 'h') ~= ARGV[12] then return {'conflict', existing} end
    local f = fields(jk)
    return {'existing', f[1], f[2], f[3], f[4]}
  end
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('HGET', KEYS[1], 'w') == ARGV[13] then return {'created'} end
  return {'duplicate'}
end
redis.call('HSET', KEYS[1], 'r', ARGV[7], 'v', ARGV[6], 's', status, 't', team, 'h', ARGV[12], 'w', ARGV[13])
set_lease(KEYS[1], ARGV[8], ARGV[9])
if has_idem then redis.call('HSET', KEYS[2], idem, id) end
redis.call('ZADD', key('ids'), 0, id)
redis.call('ZADD', key('team', team), 0, id)
redis.call('ZADD', key('created'), ARGV[10], id)
redis.call('ZADD', key('created-team', team), ARGV[10], id)
redis.call('ZADD', key('status', status), 0, id)
redis.call('ZADD', key('team-status', team, status), 0, id)
place(id, ARGV[5])
return {'created'}
