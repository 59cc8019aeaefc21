-- wrk script: POST one JSON-RPC request, repeatedly.
-- Environment: MCP_BODY (the JSON-RPC request), MCP_HEADERS (extra request headers,
-- one "Name: value" per line: the session id for 2025-11-25, the protocol version,
-- Mcp-Method and Mcp-Name for 2026-07-28), MCP_DELAY_MS (optional: each connection waits
-- this long before its next request, a paced load instead of a saturating one).
-- done() prints one JSON line with the figures the bench collects.
wrk.method = "POST"
wrk.body = os.getenv("MCP_BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
for line in string.gmatch(os.getenv("MCP_HEADERS") or "", "[^\n]+") do
  local name, value = string.match(line, "^([^:]+):%s*(.*)$")
  if name then wrk.headers[name] = value end
end

local pause = tonumber(os.getenv("MCP_DELAY_MS") or "")
if pause and pause > 0 then
  function delay() return pause end
end

local bad = 0
function response(status, headers, body)
  if status ~= 200 then bad = bad + 1 end
end

function done(summary, latency, requests)
  local secs = summary.duration / 1e6
  io.write(string.format(
    '{"requests": %d, "rps": %.1f, "p50_ms": %.3f, "p99_ms": %.3f, "max_ms": %.3f, ' ..
    '"non200": %d, "socket_errors": %d}\n',
    summary.requests, summary.requests / secs, latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, bad,
    summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.timeout))
end
