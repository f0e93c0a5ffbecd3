"""The model server: one process serves one model over an OpenAI-compatible HTTP API,
with dynamic batching for embeddings and continuous batching for generation.

It stands apart from the platform, as vLLM does: it imports nothing of Django or of the
rest of Switchboard (an import-linter contract checks this) and never touches the
database. A replica of a deployment is this process on some machine, started with
`python -m modelserver --model NAME --port N` (`python -m modelserver --help` lists the
options).
"""
