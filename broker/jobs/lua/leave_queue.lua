-- ARGV[op]: the job that no longer waits (its grant, if any, goes on). Returns the jobs granted a slot.
redis.call('ZREM', KEYS[4], ARGV[op])
redis.call('HDEL', KEYS[3], ARGV[op])
unqueue(ARGV[op])
return grant()
