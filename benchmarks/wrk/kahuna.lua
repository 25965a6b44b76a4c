-- wrk script for kahuna-pg's REST API.
-- Arguments (after --): operation (next | reserve | healthz), number of sequences
-- (1 = the hot sequence "hot", N = "s0000".."s<N-1>" at random), count for reserve.
-- Prints one machine-readable line at the end: requests, failures (any answer that is not
-- a 200 Success), and the p50/p99 latency in microseconds.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  op = args[1] or "next"
  sequences = tonumber(args[2] or "1")
  count = tonumber(args[3] or "1000")
  failures = 0
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
end

function request()
  if op == "healthz" then
    return wrk.format("GET", "/healthz")
  end
  local name = "hot"
  if sequences > 1 then
    name = string.format("s%04d", math.random(0, sequences - 1))
  end
  local body
  if op == "reserve" then
    body = string.format('{"name": "%s", "count": %d}', name, count)
  else
    body = string.format('{"name": "%s"}', name)
  end
  return wrk.format("POST", "/v1/sequences/" .. op, {["Content-Type"] = "application/json"}, body)
end

function response(status, headers, body)
  if status ~= 200 or (op ~= "healthz" and not string.find(body, '"Success"', 1, true)) then
    failures = failures + 1
  end
end

function done(summary, latency, requests)
  local failed = 0
  for _, thread in ipairs(threads) do
    failed = failed + thread:get("failures")
  end
  io.write(string.format("KAHUNA requests=%d failures=%d seconds=%.3f p50_us=%d p99_us=%d\n",
    summary.requests, failed, summary.duration / 1e6, latency:percentile(50), latency:percentile(99)))
end
