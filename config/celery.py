"""The Celery app. Broker: Redis when REDIS_URL is set, else a filesystem queue under
SWITCHBOARD_DATA_DIR that needs no server (see settings)."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("switchboard")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
