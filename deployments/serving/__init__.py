"""The model server: one process serves one model over an OpenAI-compatible HTTP API,
with dynamic batching for embeddings and continuous batching for generation.

It is started by `python manage.py serve_model --model NAME` and does not touch the
database: a replica of a deployment is just this process on some machine.
"""
