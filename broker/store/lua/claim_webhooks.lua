-- Take the due team-webhook deliveries for one sender: each is held (its score set to when the hold
-- ends) so no other replica sends it meanwhile; a sender that dies lets the hold lapse.
-- KEYS[1] the zset of deliveries by due time, KEYS[2] the hash of their tries so far
-- ARGV[1] now, ARGV[2] the hold's end, ARGV[3] how many at most
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local taken = {}
for _, key in ipairs(due) do
  redis.call('ZADD', KEYS[1], ARGV[2], key)
  taken[#taken + 1] = key
  taken[#taken + 1] = redis.call('HGET', KEYS[2], key) or '0'
end
return taken
