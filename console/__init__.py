"""Console and tenancy: project wiring, organizations, members, API keys, audit log."""

from console.celery import app as celery_app

__all__ = ["celery_app"]
