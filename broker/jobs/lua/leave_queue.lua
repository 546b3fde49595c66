-- ARGV[op]: the job that no longer waits (its grant, if any, goes on). Returns the jobs granted a slot.
if redis.call('ZREM', KEYS[4], ARGV[op]) == 1 then finish(redis.call('HGET', KEYS[3], ARGV[op]), ARGV[op], false) end
redis.call('HDEL', KEYS[3], ARGV[op])
unqueue(ARGV[op])
return grant()
