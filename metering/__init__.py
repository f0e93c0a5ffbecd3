"""Metering: usage events and their durable hand-off from the gateway (spool files, a
Redis stream), the ingester, rollups, GPU-seconds from replica transitions, the usage API
and the live usage dashboards."""
