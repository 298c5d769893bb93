-- Batches of BENCH_BATCH events (default 1000), spread over the bench customers, each with its
-- own event_id, so that every one is judged and written.
package.path = os.getenv("BENCH_LUA_DIR") .. "/?.lua;" .. package.path
local c = require("common")
local size = tonumber(os.getenv("BENCH_BATCH") or "1000")
local threads = 0
thread_id = 0  -- set per thread by setup() (a global: thread:set writes globals)
local n = 0

function setup(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end

function request()
  local parts = {}
  for i = 1, size do
    n = n + 1
    parts[i] = string.format(
      '{"customer_key":"%s","feature_key":"bench_calls","amount":1,"event_id":"b-%s-%d-%d"}',
      c.customer(n), c.run, thread_id, n)
  end
  return wrk.format("POST", nil, {
    ["Authorization"] = "Bearer " .. c.key,
    ["Content-Type"] = "application/json",
  }, '{"events":[' .. table.concat(parts, ",") .. ']}')
end

done = c.done
