-- Shared by every job script: ARGV[1] is the `{P:jobs}:` base every derived key starts with.
local base = ARGV[1]
local function key(...) return base .. table.concat({...}, ':') end
local function fields(jk) return redis.call('HMGET', jk, 'r', 'v', 'o', 'l') end
local function index(op, id, team, status)
  redis.call(op, key('status', status), id)
  redis.call(op, key('team-status', team, status), id)
end
local function set_lease(jk, owner, lease)
  if owner == '' then redis.call('HDEL', jk, 'o') else redis.call('HSET', jk, 'o', owner) end
  if lease == '' then redis.call('HDEL', jk, 'l') else redis.call('HSET', jk, 'l', lease) end
end
-- An unfinished job sits in `due` scored by when a claim may take it; an ended one leaves it.
local function place(id, ready)
  if ready == '' then redis.call('ZREM', key('due'), id) else redis.call('ZADD', key('due'), ready, id) end
end
-- Append a job's id and its fields r, v, o, l to `out`: how claims and listings answer.
local function emit(out, id)
  local f = fields(key('job', id))
  table.insert(out, id)
  table.insert(out, f[1])
  table.insert(out, f[2])
  table.insert(out, f[3])
  table.insert(out, f[4])
end
