"""Evaluation.reason: why an evaluation ended, machine-readable. Rows that ended before it existed get
the reason their status implies; an output-capped run loses the exit code the engine made up for it."""

from django.db import migrations, models

REASON_FOR_STATUS = {
    "succeeded": "exit",
    "failed": "exit",
    "timed_out": "timeout",
    "oom_killed": "oom",
    "cancelled": "cancelled",
    "stopped": "stopped",
    "safety_stopped": "safety_rule",
    "error": "engine_error",
}


def fill_reasons(apps, schema_editor):
    evaluations = apps.get_model("evaluations", "Evaluation").objects.filter(reason="")
    # A truncated output always ended the run at the cap (the runner stops it there).
    evaluations.filter(status="failed", output_truncated=True).update(
        reason="output_cap", exit_code=None, signal=None
    )
    lost = models.Q(error="worker_lost") | models.Q(error__startswith="worker_shutdown")
    evaluations.filter(lost, status="error").update(reason="worker_lost")
    for status, reason in REASON_FOR_STATUS.items():
        evaluations.filter(status=status).update(reason=reason)


class Migration(migrations.Migration):
    dependencies = [("evaluations", "0002_runtimes")]

    operations = [
        migrations.AddField(
            model_name="evaluation",
            name="reason",
            field=models.CharField(
                blank=True,
                choices=[
                    ("exit", "Exit"),
                    ("timeout", "Timeout"),
                    ("oom", "Oom"),
                    ("output_cap", "Output Cap"),
                    ("cancelled", "Cancelled"),
                    ("stopped", "Stopped"),
                    ("safety_rule", "Safety Rule"),
                    ("worker_lost", "Worker Lost"),
                    ("engine_error", "Engine Error"),
                ],
                default="",
                max_length=16,
            ),
        ),
        migrations.RunPython(fill_reasons, migrations.RunPython.noop),
    ]
