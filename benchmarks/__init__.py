"""Benchmarks: `manage.py bench NAME` runs one and prints ratios measured side by side in
one run (docs/benchmarks.md keeps the latest table). They sit above every part they
measure; `backend` is the controllable OpenAI-compatible server that the gateway
benchmark and the gateway tests put behind the gateway."""
