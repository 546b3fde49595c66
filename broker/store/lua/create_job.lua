-- KEYS: job hash, the team's idempotency hash, then the indexes it joins: ids, team, created,
-- created-team, status, team-status, due, and (only for a job with an uploaded image) the set of jobs
-- naming that upload, so expiry deletes an upload no job names any more. ARGV: id, team, status, ready
-- ("" once ended), version, record, owner, lease, created score, idempotency key ("" or "=" + key),
-- request hash, token.
-- An idempotency key already used by another job answers {'existing', its id}: the caller reads that
-- job itself (its key is not one this script was given; an expired job's key goes with it).
local id, team, status, idem = ARGV[1], ARGV[2], ARGV[3], string.sub(ARGV[10], 2)
local has_idem = ARGV[10] ~= ''
if has_idem then
  local existing = redis.call('HGET', KEYS[2], idem)
  if existing == id then return {'created'} end
  if existing then return {'existing', existing} end
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('HGET', KEYS[1], 'w') == ARGV[12] then return {'created'} end
  return {'duplicate'}
end
redis.call('HSET', KEYS[1], 'r', ARGV[6], 'v', ARGV[5], 's', status, 't', team, 'h', ARGV[11], 'w', ARGV[12])
set_lease(KEYS[1], ARGV[7], ARGV[8])
if has_idem then redis.call('HSET', KEYS[2], idem, id) end
redis.call('ZADD', KEYS[3], 0, id)
redis.call('ZADD', KEYS[4], 0, id)
redis.call('ZADD', KEYS[5], ARGV[9], id)
redis.call('ZADD', KEYS[6], ARGV[9], id)
redis.call('ZADD', KEYS[7], 0, id)
redis.call('ZADD', KEYS[8], 0, id)
place(KEYS[9], id, ARGV[4])
if KEYS[10] then redis.call('SADD', KEYS[10], id) end
return {'created'}
