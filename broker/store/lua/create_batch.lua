-- KEYS: the team's batch idempotency hash, the batch's record, the team's batch-created index. ARGV:
-- the Idempotency-Key ("" for none), the batch id, the record JSON, its created_at (unix s). Returns
-- {'existing', id} when the key already names a batch (this batch's own id when a lost reply made the
-- call run twice), {'duplicate', id} when the id is taken, else {'created', id}.
if ARGV[1] ~= '' then
  local existing = redis.call('HGET', KEYS[1], ARGV[1])
  if existing then return {'existing', existing} end
end
if redis.call('EXISTS', KEYS[2]) == 1 then return {'duplicate', ARGV[2]} end
redis.call('SET', KEYS[2], ARGV[3])
if ARGV[1] ~= '' then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[2])
return {'created', ARGV[2]}
