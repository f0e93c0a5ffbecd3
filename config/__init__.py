"""The Django project's wiring: settings (parsed strictly from the environment), the URL
map, the ASGI application (console, API, WebSockets and the /v1 gateway), and the Celery
app, loaded here so that `celery -A config` and Django both find it."""

from config.celery import app as celery_app

__all__ = ["celery_app"]
