-- Check every limit, then reserve on all of them, or on none.
-- KEYS[1]: the request record; KEYS[2..]: one counter (or lease set) per limit.
-- ARGV: now, request_id, record_ttl_ms, then per limit: metric, maximum, amount, ttl_ms.
-- Returns {1, used...} admitted, {0, index, used, index, used...} denied (every violated
-- limit), {2} already admitted.
-- `now` comes from the caller's clock (never TIME), so tests control time.
local now = tonumber(ARGV[1])
local request_id = ARGV[2]
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {2}
end
local count = #KEYS - 1
local used = {}
local violations = {0}
for i = 1, count do
  local base = 3 + (i - 1) * 4
  local metric = ARGV[base + 1]
  local maximum = tonumber(ARGV[base + 2])
  local key = KEYS[i + 1]
  local value
  if metric == 'concurrent' then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    value = redis.call('ZCARD', key)
  else
    value = tonumber(redis.call('GET', key) or '0')
  end
  local over
  if metric == 'requests' or metric == 'concurrent' then
    over = value + 1 > maximum
  else
    over = value >= maximum
  end
  if over then
    violations[#violations + 1] = i
    violations[#violations + 1] = value
  end
  used[i] = value
end
if #violations > 1 then
  return violations
end
local entries = {}
local result = {1}
for i = 1, count do
  local base = 3 + (i - 1) * 4
  local metric = ARGV[base + 1]
  local amount = ARGV[base + 3]
  local ttl_ms = ARGV[base + 4]
  local key = KEYS[i + 1]
  if metric == 'concurrent' then
    redis.call('ZADD', key, now + tonumber(ttl_ms) / 1000, request_id)
    redis.call('PEXPIRE', key, ttl_ms)
    result[i + 1] = used[i] + 1
  else
    result[i + 1] = redis.call('INCRBY', key, amount)
    redis.call('PEXPIRE', key, ttl_ms)
  end
  entries[i] = {key, metric, amount}
end
redis.call('SET', KEYS[1], cjson.encode(entries), 'PX', ARGV[3])
return result
