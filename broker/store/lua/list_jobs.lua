-- KEYS: an index zset. ARGV: base, upper bound ('+' or '(<cursor>'), count. Newest first, one snapshot:
-- id, then the fields r, v, o, l of each job.
local out = {}
for _, id in ipairs(redis.call('ZREVRANGEBYLEX', KEYS[1], ARGV[2], '-', 'LIMIT', 0, tonumber(ARGV[3]))) do
  emit(out, id)
end
return out
