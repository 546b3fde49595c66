-- KEYS: job hash, due, then for each status in ARGV[12..] its two indexes: status:<s>, team-status:<team>:<s>.
-- ARGV: expected version, new version, record, status, ready ("" once ended), owner, lease, request hash,
-- token, job id, then the team and the statuses whose indexes KEYS declares.
-- Returns 1 when written (now or by this token's first run), 0 when the version moved on, or
-- {'keys', team, status} when the stored job's own indexes are not among KEYS (nothing written: the
-- caller declares them and calls again).
local jk = KEYS[1]
local cur = redis.call('HMGET', jk, 'v', 's', 't', 'w')
if not cur[1] then return 0 end
if cur[1] ~= ARGV[1] then
  if cur[1] == ARGV[2] and cur[4] == ARGV[9] then return 1 end
  return 0
end
local id, status = ARGV[10], ARGV[4]
local old_at, new_at
if cur[2] ~= status then
  for i = 12, #ARGV do
    if ARGV[i] == cur[2] then old_at = 2 * (i - 12) + 3 end
    if ARGV[i] == status then new_at = 2 * (i - 12) + 3 end
  end
  if cur[3] ~= ARGV[11] or not old_at or not new_at then return {'keys', cur[3] or '', cur[2] or ''} end
end
redis.call('HSET', jk, 'r', ARGV[3], 'v', ARGV[2], 's', status, 'h', ARGV[8], 'w', ARGV[9])
set_lease(jk, ARGV[6], ARGV[7])
if old_at then
  redis.call('ZREM', KEYS[old_at], id)
  redis.call('ZREM', KEYS[old_at + 1], id)
  redis.call('ZADD', KEYS[new_at], 0, id)
  redis.call('ZADD', KEYS[new_at + 1], 0, id)
end
place(KEYS[2], id, ARGV[5])
return 1
