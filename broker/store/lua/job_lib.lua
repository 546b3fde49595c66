-- Shared by the job scripts. Every key they touch is one the caller declared in KEYS; ids from ARGV
-- only ever name members and fields, never keys (Redis Cluster requires it).
local function fields(jk) return redis.call('HMGET', jk, 'r', 'v', 'o', 'l') end
local function set_lease(jk, owner, lease)
  if owner == '' then redis.call('HDEL', jk, 'o') else redis.call('HSET', jk, 'o', owner) end
  if lease == '' then redis.call('HDEL', jk, 'l') else redis.call('HSET', jk, 'l', lease) end
end
-- An unfinished job sits in `due` scored by when a claim may take it; an ended one leaves it.
local function place(due, id, ready)
  if ready == '' then redis.call('ZREM', due, id) else redis.call('ZADD', due, ready, id) end
end
-- Append a job's id and its fields r, v, o, l (from its key `jk`) to `out`: how claims answer.
local function emit(out, id, jk)
  local f = fields(jk)
  table.insert(out, id)
  table.insert(out, f[1])
  table.insert(out, f[2])
  table.insert(out, f[3])
  table.insert(out, f[4])
end
