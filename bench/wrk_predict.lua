-- wrk script for bench/bench_api.py: POST the JSON bodies of a file (one per line) in turn and print
-- a JSON summary at the end.
local bodies, i = {}, 0

init = function(args)
  for line in io.lines(args[1]) do table.insert(bodies, line) end
end

request = function()
  i = i % #bodies + 1
  return wrk.format("POST", "/predict", {["Content-Type"] = "application/json"}, bodies[i])
end

done = function(summary, latency, requests)
  io.write(string.format('{"requests": %d, "seconds": %.4f, "non_2xx": %d, "socket_errors": %d, "p50_ms": %.2f}\n',
    summary.requests, summary.duration / 1e6, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50) / 1000))
end
