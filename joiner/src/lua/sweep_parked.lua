local pttl = redis.call('PTTL', KEYS[2])
if pttl == -2 then return {0} end
if pttl > tonumber(ARGV[1]) then return {2} end
local items = redis.call('LRANGE', KEYS[2], 0, -1)
local first = 1
for i = #items, 1, -1 do
  if items[i] == '' then first = i + 1 break end
end
if first > #items then return {0} end
redis.call('RPUSH', KEYS[2], '')
local out = {1, redis.call('GET', KEYS[1]) or ''}
for i = first, #items do out[#out + 1] = items[i] end
return out
