local st = redis.call('GET', KEYS[1])
if not st then return 0 end
if string.byte(st, 1) == 48 then
  redis.call('SETRANGE', KEYS[1], 0, '2')
  return st
end
return 1
