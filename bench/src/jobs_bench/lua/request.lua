-- wrk script for make bench: method, body and token from the environment; counts answers by
-- status in every thread so 429s and errors are reported apart from accepted requests.
wrk.method = os.getenv("BENCH_METHOD") or "GET"
local body = os.getenv("BENCH_BODY")
if body and body ~= "" then
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
end
local token = os.getenv("BENCH_TOKEN")
if token and token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  statuses = {}
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local merged = {}
  for _, thread in ipairs(threads) do
    for code, count in pairs(thread:get("statuses")) do
      merged[code] = (merged[code] or 0) + count
    end
  end
  io.write("BENCH_STATUSES")
  for code, count in pairs(merged) do
    io.write(" " .. code .. "=" .. count)
  end
  io.write("\n")
  io.write(string.format("BENCH_LATENCY_US p50=%d p99=%d\n",
    latency:percentile(50), latency:percentile(99)))
  io.write(string.format("BENCH_TOTAL requests=%d duration_us=%d\n",
    summary.requests, summary.duration))
end
