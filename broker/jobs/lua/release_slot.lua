-- ARGV[op]: the attempt whose slot is given back. Returns the jobs granted a slot.
redis.call('ZREM', KEYS[1], ARGV[op])
redis.call('HDEL', KEYS[3], ARGV[op])
return grant()
