-- Shared by the bench scripts: API key from the environment, a JSON summary line at the end.
local M = {}
M.key = os.getenv("BENCH_API_KEY")
M.customers = tonumber(os.getenv("BENCH_CUSTOMERS") or "100")
M.prefix = os.getenv("BENCH_CUSTOMER_PREFIX") or "bench-c"
M.run = os.getenv("BENCH_RUN") or tostring(os.time())

function M.customer(n)
  if M.customers == 1 then return os.getenv("BENCH_HOT_CUSTOMER") or "bench-hot" end
  return string.format("%s%03d", M.prefix, n % M.customers)
end

function M.done(summary, latency, requests)
  local codes = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"non2xx":%d,"socket_errors":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, codes.status,
    codes.connect + codes.read + codes.write + codes.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end

return M
