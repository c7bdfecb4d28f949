-- Settle or release one admitted request; a missing record (unknown id, or already
-- settled) is a no-op. The counter keys come from the record; they share the record's
-- {prefix} hash tag, so they live on the same cluster slot.
-- KEYS[1]: the request record. ARGV: mode ('settle' | 'release'), request_id,
-- actual cost_nanos, actual tokens.
local raw = redis.call('GET', KEYS[1])
if not raw then
  return 0
end
redis.call('DEL', KEYS[1])
local release = ARGV[1] == 'release'
local request_id = ARGV[2]
for _, entry in ipairs(cjson.decode(raw)) do
  local key, metric, reserved = entry[1], entry[2], tonumber(entry[3])
  if metric == 'concurrent' then
    redis.call('ZREM', key, request_id)
  elseif redis.call('EXISTS', key) == 1 then
    local new = 0
    if not release then
      if metric == 'cost' then
        new = tonumber(ARGV[3])
      elseif metric == 'tokens' then
        new = tonumber(ARGV[4])
      else
        new = reserved
      end
    end
    local delta = new - reserved
    if delta ~= 0 then
      if redis.call('INCRBY', key, string.format('%d', delta)) < 0 then
        redis.call('SET', key, 0, 'KEEPTTL')
      end
    end
  end
end
return 1
