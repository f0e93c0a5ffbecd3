"""The /v1 data plane: an ASGI application on the hot path of every inference request.

It runs outside Django's request machinery (no middleware, no view resolution): one pass
over the headers, a cached key and organization snapshot, one limiter call, then the
upstream exchange. Database work happens only when a cache entry is stale, in a thread.

One request, module by module:
- `app`: the ASGI entry point; the order of checks, and the error answers;
- `parsing`: the body, read within its size limit, and the JSON request checked;
- `auth`, `snapshot`, `cache`: the key, and the organization's routes and limits, cached;
- `admission`: rate limits (`limits`) and the monthly spend limit (`spend`), settled on
  every way out;
- `upstream`: candidates by the route's policy, attempts, retries and failover, breakers
  (`health`), over the pooled HTTP client (`pool`);
- `sse`: streamed answers relayed byte for byte, with their usage read on the way;
- `cold_start`: scale from zero through the control plane;
- `accounting`: the usage event (durable before the last byte), metrics, access log.

Order of checks: body size (413), key (401/403), JSON (400), organization standing (403),
model (404), limits (429), the monthly spend limit (402), then targets (503 when none is
healthy in the allowed regions).
"""
