-- KEYS: the team's history list, its last-write token. ARGV: expected version, new version JSON, token.
-- Returns -1 when written (now or by this token's first run), else the current version.
local n = redis.call('LLEN', KEYS[1])
if n == tonumber(ARGV[1]) then
  redis.call('RPUSH', KEYS[1], ARGV[2])
  redis.call('SET', KEYS[2], ARGV[3])
  return -1
end
if n == tonumber(ARGV[1]) + 1 and redis.call('GET', KEYS[2]) == ARGV[3] then return -1 end
return n
