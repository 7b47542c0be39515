-- Reserve one message against a user's caps, all or nothing.
--
-- KEYS[1]  sorted set of the user's messages on this channel
-- KEYS[2]  sorted set of the user's messages on every min-gap channel
-- Members are decision ids, scores the send time in Unix milliseconds.
--
-- ARGV[1]  decision id
-- ARGV[2]  send time (ms)
-- ARGV[3], ARGV[4]  local day of the send time [start, end) (ms)
-- ARGV[5], ARGV[6]  ISO week of the send time [start, end) (ms)
-- ARGV[7]  daily limit, 0 = none
-- ARGV[8]  weekly limit, 0 = none
-- ARGV[9]  minimum gap (ms), 0 = the channel keeps no gap
-- ARGV[10] now (ms)
-- ARGV[11] how long a message is remembered after its send time (ms)
-- ARGV[12], ARGV[13]  the channel's full daily and weekly caps, which the
--          limits may be below (priority headroom); only to name the rule
--
-- Returns {1, "reserved", at}, {1, "already", at} when this decision holds
-- a reservation already, or {0, rule} when a limit is reached.

local member = ARGV[1]
local at = tonumber(ARGV[2])
local now = tonumber(ARGV[10])
local keep = tonumber(ARGV[11])

local held = redis.call('ZSCORE', KEYS[1], member)
if held then
  return {1, 'already', held}
end

local old = '(' .. (now - keep)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', old)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', old)

local function full(limit, cap, from, to, rule)
  if limit <= 0 then
    return nil
  end
  local n = redis.call('ZCOUNT', KEYS[1], from, '(' .. to)
  if n < limit then
    return nil
  end
  if n < cap then
    return 'priority_headroom'
  end
  return rule
end

local rule = full(tonumber(ARGV[8]), tonumber(ARGV[13]), ARGV[5], ARGV[6], 'weekly_cap')
  or full(tonumber(ARGV[7]), tonumber(ARGV[12]), ARGV[3], ARGV[4], 'daily_cap')
if rule then
  return {0, rule}
end
local gap = tonumber(ARGV[9])
if gap > 0 and redis.call('ZCOUNT', KEYS[2], '(' .. (at - gap), '(' .. (at + gap)) > 0 then
  return {0, 'min_gap'}
end

-- Each set lives as long as its latest message needs remembering. The TTL
-- is relative to the caller's clock, not Redis's, so a skew between them
-- cannot expire a set early.
local function store(key)
  redis.call('ZADD', key, at, member)
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  redis.call('PEXPIRE', key, math.floor(tonumber(last[2]) - now + keep))
end
store(KEYS[1])
if gap > 0 then
  store(KEYS[2])
end
return {1, 'reserved', ARGV[2]}
