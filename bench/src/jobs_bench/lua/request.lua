-- wrk script for make bench. From the environment: the method, a body (`%N` in it becomes a
-- number unique to the request), a token; BENCH_REQUESTS, a file of `path<TAB>token<TAB>etag`
-- lines to rotate over (many jobs and users, not one job read again and again); BENCH_RATE,
-- requests per second to pace at (an offered load, not as fast as the server answers).
-- Answers are counted by status in every thread so 429s and errors are reported apart.
local method = os.getenv("BENCH_METHOD") or "GET"
local body = os.getenv("BENCH_BODY") or ""
local token = os.getenv("BENCH_TOKEN") or ""
local list_file = os.getenv("BENCH_REQUESTS") or ""
local rate = tonumber(os.getenv("BENCH_RATE") or "0") or 0
local thread_count = tonumber(os.getenv("BENCH_THREADS") or "1") or 1

-- wrk's Lua has no wall clock finer than a second: LuaJIT's FFI reads CLOCK_MONOTONIC.
local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clock_id, bench_timespec *tp);
]]
local clock = ffi.new("bench_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, clock)
  return tonumber(clock.tv_sec) * 1000 + tonumber(clock.tv_nsec) / 1e6
end

local threads = {}
local started = 0

function setup(thread)
  thread:set("thread_index", started)
  started = started + 1
  table.insert(threads, thread)
end

local entries = {}
local next_entry = 1
local sent = 0
local due_ms = nil
local interval_ms = 0

function init(args)
  statuses = {}
  if list_file ~= "" then
    for line in io.lines(list_file) do
      local path, tok, tag = line:match("^([^\t]*)\t([^\t]*)\t(.*)$")
      if path then
        table.insert(entries, { path, tok, tag })
      end
    end
    -- Threads start apart in the list, so they do not read the same job at the same moment.
    if #entries > 0 then
      next_entry = (thread_index * math.floor(#entries / thread_count)) % #entries + 1
    end
  end
  if rate > 0 then
    interval_ms = 1000 * thread_count / rate
  end
end

function request()
  local headers = {}
  local path = wrk.path
  local tok = token
  if #entries > 0 then
    local entry = entries[next_entry]
    next_entry = next_entry % #entries + 1
    path = entry[1]
    if entry[2] ~= "" then tok = entry[2] end
    if entry[3] ~= "" then headers["If-None-Match"] = entry[3] end
  end
  if tok ~= "" then
    headers["Authorization"] = "Bearer " .. tok
  end
  local payload = nil
  if body ~= "" then
    sent = sent + 1
    headers["Content-Type"] = "application/json"
    payload = (body:gsub("%%N", thread_index .. "-" .. sent))
  end
  return wrk.format(method, path, headers, payload)
end

if rate > 0 then
  -- Paced per thread (its connections share one schedule): late requests go at once, so a
  -- slow server sees the offered load queue up rather than a politely slower client.
  function delay()
    local now = now_ms()
    if due_ms == nil then due_ms = now end
    due_ms = due_ms + interval_ms
    if due_ms <= now then return 0 end
    return due_ms - now
  end
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
