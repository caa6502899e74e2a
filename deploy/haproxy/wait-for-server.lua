-- Holds a new connection while its backend has no usable server, instead of
-- closing it at once: during a master move the write slot is in maintenance for
-- the few milliseconds between dnsd's push taking the old master out and readying
-- the new one, and a writer reconnecting then should wait, not fail.
--
--   tcp-request inspect-delay 5s
--   tcp-request content lua.wait-for-server <backend> <max ms>
--
-- HAProxy 2.6 has no wake-up on a server state change, and core.msleep() inside
-- an action sleeps far longer than asked (it wakes with the stream's analysers),
-- so for the first SPIN_MS this yields to the scheduler and re-reads the
-- backend's active server count at most once per millisecond: a move readies
-- the new master within that. It must not spin longer: HAProxy aborts the whole
-- process when one stream is woken more than 100000 times a second for long
-- ("A bogus STREAM ... is spinning"), which the netns fault suite hit while a
-- frozen master's slot stayed out of service for seconds. After SPIN_MS it
-- sleeps between looks instead, however coarsely. It gives up after <max ms>;
-- HAProxy then refuses the connection as it would have at once.

local SPIN_MS = 20

local function now_ms()
  local t = core.now()
  return t.sec * 1000 + t.usec / 1000
end

local function usable(backend)
  local act = tonumber(backend:get_stats()["act"])
  return act ~= nil and act > 0
end

core.register_action("wait-for-server", { "tcp-req" }, function(txn, name, max_ms)
  local backend = core.backends[name]
  if backend == nil then
    core.Alert("wait-for-server: no backend " .. tostring(name))
    return
  end
  local limit = tonumber(max_ms) or 0
  local start = now_ms()
  local checked = start
  if usable(backend) then
    return
  end
  while true do
    if now_ms() - start < SPIN_MS then
      core.yield()
    else
      core.msleep(5)
    end
    local now = now_ms()
    if now - start >= limit then
      return
    end
    if now - checked >= 1 then
      checked = now
      if usable(backend) then
        return
      end
    end
  end
end, 2)
