-- ARGV[op]: the attempt whose slot is given back. Returns the jobs granted a slot.
if redis.call('ZREM', KEYS[1], ARGV[op]) == 1 then count(redis.call('HGET', KEYS[3], ARGV[op]), -1) end
redis.call('HDEL', KEYS[3], ARGV[op])
return grant()
