-- wrk script for scripts/bench-ldp, bench-storage and bench-cluster.
--
--   wrk ... -s bench.lua URL -- get
--   wrk ... -s bench.lua URL -- get-bulk
--   wrk ... -s bench.lua URL -- put PREFIX
--   wrk ... -s bench.lua URL -- random N
--
-- "get" sends the same request again and again and counts the response
-- statuses. "get-bulk" does the same without counting: wrk then skips handing
-- each response to Lua, which would copy every body (10 MiB ones, say) on the
-- machine that also runs the server; wrk still counts statuses >= 400.
-- "put" sends a PUT of a new small Turtle document for every request, at
-- URL's path + PREFIX-<thread>-<n>.ttl, and counts the response statuses.
-- "random N" sends each GET to one of N paths chosen uniformly at random:
-- URL's path + r00 … r<N-1> (two digits at least, zero-padded), without
-- counting statuses either (like get-bulk). Every thread seeds its own
-- generator differently.
--
-- done() prints one machine-readable line starting with "BENCH " (latencies in
-- microseconds), which the bash script parses.

local threads = {}
local next_tid = 0

function setup(thread)
  next_tid = next_tid + 1
  thread:set("tid", next_tid)
  table.insert(threads, thread)
end

local function put_request()
  n = n + 1
  local name = prefix .. "-" .. tid .. "-" .. n
  -- A different body each time, so that no server can skip the write by
  -- recognising bytes it already stores.
  local body = "@prefix dc: <http://purl.org/dc/terms/>.\n" ..
    "<#it> a <http://schema.org/Thing>;\n" ..
    "  dc:title \"benchmark resource\";\n" ..
    "  dc:identifier \"" .. name .. "\".\n"
  return wrk.format("PUT", base .. name .. ".ttl", put_headers, body)
end

local function count_status(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

local function random_request()
  return paths[math.random(1, #paths)]
end

function init(args)
  local mode = args[1] or "get"
  if mode == "put" then
    prefix = args[2] or "r"
    base = wrk.path
    if base:sub(-1) ~= "/" then base = base .. "/" end
    n = 0
    statuses = {}
    put_headers = { ["Content-Type"] = "text/turtle" }
    request = put_request
    response = count_status
  elseif mode == "get" then
    statuses = {}
    response = count_status
  elseif mode == "random" then
    local n = tonumber(args[2] or "")
    if not n or n < 1 then error("bench.lua: random needs a count of paths") end
    local base = wrk.path
    if base:sub(-1) ~= "/" then base = base .. "/" end
    paths = {}
    for i = 0, n - 1 do
      table.insert(paths, wrk.format("GET", base .. string.format("r%02d", i)))
    end
    -- The thread id and the clock: no two threads draw the same sequence.
    math.randomseed(os.time() * 1000 + tid * 7919)
    for _ = 1, 10 do math.random() end
    request = random_request
  elseif mode ~= "get-bulk" then
    error("bench.lua: unknown mode " .. mode)
  end
end

function done(summary, latency, requests)
  local codes = {}
  for _, t in ipairs(threads) do
    local s = t:get("statuses")
    if s then
      for code, count in pairs(s) do
        codes[code] = (codes[code] or 0) + count
      end
    end
  end
  local list = {}
  for code, count in pairs(codes) do
    table.insert(list, code .. ":" .. count)
  end
  table.sort(list)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d bytes=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d " ..
    "err_connect=%d err_read=%d err_write=%d err_timeout=%d err_status=%d statuses=%s\n",
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.timeout, e.status,
    #list > 0 and table.concat(list, ",") or "-"))
end
