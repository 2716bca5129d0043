-- wrk script: a fixed, deterministic mix of SCIM 2.0 operations.
-- Env: BENCH_PAYLOAD_DIR (request bodies), BENCH_WRK_JSON (summary output file),
-- BENCH_DELAY_MS (optional: each connection pauses this long after every response, which
-- caps the offered load at connections * 1000 / BENCH_DELAY_MS requests per second).
-- Cycle of 10 requests (per connection-independent thread counter):
--   2x POST  /scim/v2/Users                (user-create.json, ~1.2 KB)  -> 201
--   3x GET   /scim/v2/Users/{id}                                         -> 200
--   2x PATCH /scim/v2/Users/{id}           (user-patch.json, 8 ops)      -> 200
--   1x GET   /scim/v2/Users?filter=...     (ListResponse, ~3.9 KB)       -> 200
--   1x PATCH /scim/v2/Groups/{id}          (group-patch, 50 members)     -> 204
--   1x DELETE /scim/v2/Users/{id}                                        -> 204
-- No response() callback: it would make wrk parse every response in Lua and
-- become the bottleneck. Non-2xx/3xx are counted by wrk as errors.status.

local dir = os.getenv("BENCH_PAYLOAD_DIR") or "payloads"

local function slurp(name)
  local f = assert(io.open(dir .. "/" .. name, "rb"))
  local s = f:read("*a")
  f:close()
  return (s:gsub("%s+$", ""))
end

local user_create = slurp("user-create.json")
local user_patch  = slurp("user-patch.json")
local group_patch = slurp("group-patch-50-members.json")

local ids = {
  "2819c223-7f76-453a-919d-413861904646", "5d48a0a8-e3f9-4b5a-9c3e-1f2f4a6b7c8d",
  "9f1c2e3d-4b5a-6978-8a9b-0c1d2e3f4a5b", "0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d",
}
local names = { "alice.johnson", "bob.martinez", "carol.nguyen", "dave.okafor" }
local group_id = "e9e30dba-f08f-4109-8486-d5c6a331660a"

local base = {
  ["Authorization"] = "Bearer bench-token-0123456789abcdef",
  ["Accept"] = "application/scim+json",
  ["User-Agent"] = "scim-bench/1 (wrk)",
}
local function hdrs(with_body)
  local h = {}
  for k, v in pairs(base) do h[k] = v end
  -- wrk 4.1's wrk.format() does not add Host itself
  h["Host"] = wrk.port and (wrk.host .. ":" .. wrk.port) or wrk.host
  if with_body then h["Content-Type"] = "application/scim+json" end
  return h
end

local reqs = {}
local function add(method, path, body)
  reqs[#reqs + 1] = wrk.format(method, path, hdrs(body ~= nil), body)
end

for i = 1, #ids do
  local id, nm = ids[i], names[i]
  add("POST",   "/scim/v2/Users", user_create)
  add("GET",    "/scim/v2/Users/" .. id)
  add("PATCH",  "/scim/v2/Users/" .. id, user_patch)
  add("GET",    "/scim/v2/Users?filter=userName%20eq%20%22" .. nm .. "%40example.com%22")
  add("GET",    "/scim/v2/Users/" .. id)
  add("POST",   "/scim/v2/Users", user_create)
  add("PATCH",  "/scim/v2/Groups/" .. group_id, group_patch)
  add("GET",    "/scim/v2/Users/" .. id)
  add("PATCH",  "/scim/v2/Users/" .. id, user_patch)
  add("DELETE", "/scim/v2/Users/" .. id)
end

local threads = {}
local counter = 0

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  counter = (tid or 0) * 7  -- threads start at different points of the cycle
end

function request()
  counter = counter + 1
  return reqs[(counter % #reqs) + 1]
end

-- Paced mode: each connection pauses after every response, on average BENCH_DELAY_MS. The
-- pause is drawn uniformly from 0 to twice that (whole milliseconds, as wrk takes them): with
-- a fixed pause all connections stay in lockstep and their requests arrive as one burst per
-- period, so the slowest request of a burst measures the burst, not the proxy.
local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "0") or 0
if delay_ms > 0 then
  math.randomseed(os.time())
  function delay()
    return math.random(0, 2 * delay_ms)
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  local out = string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d,' ..
    '"lat_mean_us":%.1f,"lat_max_us":%d,"lat_p50_us":%d,"lat_p90_us":%d,"lat_p99_us":%d,"lat_p999_us":%d}',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9))
  local path = os.getenv("BENCH_WRK_JSON")
  if path then
    local f = assert(io.open(path, "w"))
    f:write(out, "\n")
    f:close()
  else
    io.write(out, "\n")
  end
end
