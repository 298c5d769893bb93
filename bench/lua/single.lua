-- One event per request, each with its own event_id, spread over the bench customers
-- (BENCH_CUSTOMERS=1: all on one customer's wallet).
package.path = os.getenv("BENCH_LUA_DIR") .. "/?.lua;" .. package.path
local c = require("common")
local threads = 0
thread_id = 0  -- set per thread by setup() (a global: thread:set writes globals)
local n = 0

function setup(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end

function init(args)
  math.randomseed(thread_id * 7919 + os.time())
  n = math.random(0, c.customers - 1)
end

function request()
  n = n + 1
  local body = string.format(
    '{"customer_key":"%s","feature_key":"bench_calls","amount":1,"event_id":"s-%s-%d-%d"}',
    c.customer(n), c.run, thread_id, n)
  return wrk.format("POST", nil, {
    ["Authorization"] = "Bearer " .. c.key,
    ["Content-Type"] = "application/json",
  }, body)
end

done = c.done
