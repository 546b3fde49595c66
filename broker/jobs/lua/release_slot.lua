-- ARGV[op]: the attempt whose slot is given back. Returns the jobs granted a slot.
if redis.call('ZREM', KEYS[1], ARGV[op]) == 1 then finish(redis.call('HGET', KEYS[3], ARGV[op]), ARGV[op], true) end
redis.call('HDEL', KEYS[3], ARGV[op])
return grant()
