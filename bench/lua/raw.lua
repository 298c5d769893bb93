package.path = os.getenv("BENCH_LUA_DIR") .. "/?.lua;" .. package.path
local c = require("common")
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer " .. c.key
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"customer_key":"bench-raw","feature_key":"bench_calls","amount":1}'
done = c.done
