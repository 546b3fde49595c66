-- Shared by the slot scripts of one provider (broker/jobs/redis_capacity.py has the key layout).
-- KEYS: 1 slots, 2 submits, 3 owners, 4 grants, 5 shares, 6 passes, 7 places, 8 waiting, 9 in use
-- (team -> slots held or granted), 10 starts (slot or grant -> when it began), 11 served (team -> the
-- slot-seconds of its slots ended; '~hold': the mean hold), 12.. the queues of the teams named in ARGV. ARGV: 1 now, 2 max concurrency ("" none),
-- 3 requests a minute ("" none), 4 how long a grant holds, 5 the number of teams N, 6..5+N their
-- names, then the script's.
local now = tonumber(ARGV[1])
local cap = ARGV[2] ~= '' and tonumber(ARGV[2]) or nil
local rpm = ARGV[3] ~= '' and tonumber(ARGV[3]) or nil
local hold_s = tonumber(ARGV[4])
local nteams = tonumber(ARGV[5])
local queue_of, team_names = {}, {}
for i = 1, nteams do
  queue_of[ARGV[5 + i]] = KEYS[11 + i]
  team_names[i] = ARGV[5 + i]
end
local op = 6 + nteams -- the first of the script's own arguments

-- The fair share's service (broker/jobs/queues.py): the slot-seconds of a team's slots ended, plus one
-- mean hold for each slot it holds now.

-- A slot or grant `id` of the team begins now.
local function begin(team, id)
  redis.call('HINCRBY', KEYS[9], team, 1)
  redis.call('HSET', KEYS[10], id, ARGV[1])
end

-- A slot or grant `id` of the team ends now: its time is served; a render's (`render`) also moves the
-- mean hold.
local function finish(team, id, render)
  local start = redis.call('HGET', KEYS[10], id)
  redis.call('HDEL', KEYS[10], id)
  if not team then return end
  if redis.call('HINCRBY', KEYS[9], team, -1) <= 0 then redis.call('HDEL', KEYS[9], team) end
  if not start then return end -- a slot from before the service was kept: nothing to count
  local held = now - tonumber(start)
  redis.call('HINCRBYFLOAT', KEYS[11], team, held)
  if not render then return end
  local mean = tonumber(redis.call('HGET', KEYS[11], '~hold') or '0')
  if mean <= 0 then mean = held else mean = mean + 0.1 * (held - mean) end
  redis.call('HSET', KEYS[11], '~hold', mean)
end

local function mean_hold()
  return tonumber(redis.call('HGET', KEYS[11], '~hold') or '0')
end

local function service(team)
  local held = tonumber(redis.call('HGET', KEYS[9], team) or '0')
  return tonumber(redis.call('HGET', KEYS[11], team) or '0') + held * mean_hold()
end

-- Members of a zset whose time has passed: lapsed slots, lapsed grants (their jobs keep their places).
local function lapse(key)
  local gone = redis.call('ZRANGEBYSCORE', key, '-inf', '(' .. ARGV[1])
  for _, member in ipairs(gone) do
    finish(redis.call('HGET', KEYS[3], member), member, false)
    redis.call('HDEL', KEYS[3], member)
  end
  if #gone > 0 then redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. ARGV[1]) end
end

local function unqueue(job)
  local team = redis.call('HGET', KEYS[7], job)
  if not team then return end
  redis.call('HDEL', KEYS[7], job)
  if queue_of[team] then redis.call('ZREM', queue_of[team], job) end
  if redis.call('HINCRBY', KEYS[8], team, -1) <= 0 then redis.call('HDEL', KEYS[8], team) end
end

-- Slots held or granted, per team (kept as counts: never a walk over the slots).
local function in_use()
  local counts, flat = {}, redis.call('HGETALL', KEYS[9])
  for i = 1, #flat, 2 do counts[flat[i]] = tonumber(flat[i + 1]) end
  return counts
end

local function free_now()
  local granted = redis.call('ZCARD', KEYS[4])
  local free = 1000000000
  if cap then free = cap - redis.call('ZCARD', KEYS[1]) - granted end
  if rpm then
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tostring(now - 60))
    free = math.min(free, rpm - redis.call('ZCARD', KEYS[2]) - granted)
  end
  return free
end

-- The team's first waiting job without a grant, and its score.
local function head(key, granted)
  local from = 0
  while true do
    local batch = redis.call('ZRANGE', key, from, from + granted, 'WITHSCORES')
    if #batch == 0 then return nil, nil end
    for i = 1, #batch, 2 do
      if not redis.call('ZSCORE', KEYS[4], batch[i]) then return batch[i], tonumber(batch[i + 1]) end
    end
    from = from + granted + 1
  end
end

-- The team got a slot: the round robin of ties moves past it (KEYS[6]: team -> the turn of its last slot).
local function mark(team)
  redis.call('HSET', KEYS[6], team, redis.call('HINCRBY', KEYS[6], '~turn', 1))
end

local function before(a, b)
  for i = 1, #a do
    if math.abs(a[i] - b[i]) > 1e-9 then return a[i] < b[i] end
  end
  return false
end

-- A team's weight and guaranteed slots (KEYS[5]: from its latest queued job; 1 and 0 if none).
local function share_of(team)
  local share = redis.call('HGET', KEYS[5], team)
  if not share then return 1, 0 end
  local w, g = string.match(share, '^(%S+) (%S+)$')
  return tonumber(w), tonumber(g)
end

-- The teams in a hash of team -> count with a count above 0, but `team`.
local function counted(key, team)
  local names, flat = {}, redis.call('HGETALL', key)
  for i = 1, #flat, 2 do
    if flat[i] ~= team and tonumber(flat[i + 1]) > 0 then names[#names + 1] = flat[i] end
  end
  return names
end

-- A team that starts waiting is held within one round of the most served of the teams waiting (holding
-- slots, if none waits): placed() in broker/jobs/queues.py.
local function place(team, weight)
  local others = counted(KEYS[8], team)
  if #others == 0 then others = counted(KEYS[9], team) end
  if #others == 0 then return end
  local lead = nil
  for _, other in ipairs(others) do
    local level = service(other) / share_of(other)
    if not lead or level > lead then lead = level end
  end
  local slots = cap
  if not slots then
    slots = 0
    for _, held in pairs(in_use()) do slots = slots + held end
  end
  local credit = slots * mean_hold() / weight
  local own = service(team)
  local level = math.min(math.max(own / weight, lead - credit), lead + credit)
  if math.abs(level * weight - own) > 1e-9 then
    redis.call('HINCRBYFLOAT', KEYS[11], team, level * weight - own)
  end
end

-- Grant the free slots to the next jobs by the rule of broker/jobs/queues.py; returns them.
local function grant()
  lapse(KEYS[1])
  lapse(KEYS[4])
  local woken = {}
  local granted = redis.call('ZCARD', KEYS[4])
  if redis.call('HLEN', KEYS[7]) <= granted then return woken end
  local free = free_now()
  if free <= 0 then return woken end
  local counts = in_use()
  while free > 0 do
    local best, best_team, best_job = nil, nil, nil
    for _, team in ipairs(team_names) do
      local job, score = head(queue_of[team], granted)
      if job then
        local weight, guaranteed = share_of(team)
        local used = counts[team] or 0
        local rank, ratio = 1, service(team) / weight
        if used < guaranteed then rank, ratio = 0, used / guaranteed end
        local turn = tonumber(redis.call('HGET', KEYS[6], team) or '0')
        local key = {rank, ratio, turn, score}
        if not best or before(key, best) then
          best, best_team, best_job = key, team, job
        end
      end
    end
    if not best then break end
    redis.call('ZADD', KEYS[4], now + hold_s, best_job)
    redis.call('HSET', KEYS[3], best_job, best_team)
    begin(best_team, best_job)
    mark(best_team)
    counts[best_team] = (counts[best_team] or 0) + 1
    granted = granted + 1
    woken[#woken + 1] = best_job
    free = free - 1
  end
  return woken
end

-- The job takes a slot for `attempt` (its grant, if it held one, becomes the slot and keeps its start; a
-- slot taken without one is the team's turn as a grant would be).
local function take(attempt, lapses, job, team)
  if redis.call('ZREM', KEYS[4], job) == 1 then
    redis.call('HDEL', KEYS[3], job)
    local start = redis.call('HGET', KEYS[10], job)
    redis.call('HDEL', KEYS[10], job)
    if start then redis.call('HSET', KEYS[10], attempt, start) end
  else
    begin(team, attempt)
    mark(team)
  end
  unqueue(job)
  redis.call('ZADD', KEYS[1], lapses, attempt)
  redis.call('HSET', KEYS[3], attempt, team)
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tostring(now - 60))
  redis.call('ZADD', KEYS[2], ARGV[1], attempt)
end
