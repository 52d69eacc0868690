"""Recurring maintenance, run by `manage.py rqcron crucible.cron` (one scheduler process)."""

from django.conf import settings
from rq.cron import register

register("apps.evaluations.jobs.reconcile", queue_name="high", interval=settings.RECONCILE_INTERVAL_S)
