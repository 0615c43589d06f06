local state = ARGV[1]
local window = tonumber(ARGV[3])
local parked = redis.call('LRANGE', KEYS[2], 0, -1)
local flag = 48
local old = redis.call('GET', KEYS[1])
if old then flag = string.byte(old, 1) end
if flag ~= 49 then
  local ets = ts(state, 2)
  for _, p in ipairs(parked) do
    local its = ts(p, 1)
    if ets and its and its - ets >= 0 and its - ets <= window then flag = 49 break end
  end
end
redis.call('SET', KEYS[1], string.char(flag) .. string.sub(state, 2), 'PX', ARGV[2])
return parked
