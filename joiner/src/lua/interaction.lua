local st = redis.call('GET', KEYS[1])
if st then
  if string.byte(st, 1) ~= 49 then
    local ets = ts(st, 2)
    local its = ts(ARGV[1], 1)
    local window = tonumber(ARGV[3])
    if ets and its and its - ets >= 0 and its - ets <= window then
      redis.call('SETRANGE', KEYS[1], 0, '1')
    end
  end
  return st
end
if redis.call('LPOS', KEYS[2], ARGV[1]) then return 1 end
if redis.call('LLEN', KEYS[2]) >= tonumber(ARGV[4]) then return 2 end
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 0
