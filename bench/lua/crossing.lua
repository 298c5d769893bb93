-- One event per request, each for a customer not used before (bench-x<n>, seeded by run.py
-- with an allowance of 1.25 on the bench feature): its first event of 1 reaches 80 % of the
-- allowance, so every accepted request writes one usage.threshold_reached row to the outbox.
-- run.py gives each run (round) its own range of customers, BENCH_CROSS_FIRST onwards, and
-- each wrk thread BENCH_CROSS_SPAN of them; a thread that used up its span goes on into the
-- next one's (those events cross nothing, which run.py's outbox check would show).
package.path = os.getenv("BENCH_LUA_DIR") .. "/?.lua;" .. package.path
local c = require("common")
local first = tonumber(os.getenv("BENCH_CROSS_FIRST") or "0")
local span = tonumber(os.getenv("BENCH_CROSS_SPAN") or "1000")
local threads = 0
thread_id = 0  -- set per thread by setup() (a global: thread:set writes globals)
local n = 0

function setup(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end

function init(args)
  n = first + (thread_id - 1) * span
end

function request()
  local body = string.format(
    '{"customer_key":"bench-x%d","feature_key":"bench_calls","amount":1,"event_id":"x-%s-%d-%d"}',
    n, c.run, thread_id, n)
  n = n + 1
  return wrk.format("POST", nil, {
    ["Authorization"] = "Bearer " .. c.key,
    ["Content-Type"] = "application/json",
  }, body)
end

done = c.done
