package.path = os.getenv("BENCH_LUA_DIR") .. "/?.lua;" .. package.path
local c = require("common")
wrk.method = "GET"
wrk.headers["Authorization"] = "Bearer " .. c.key
done = c.done
