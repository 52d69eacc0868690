from django.apps import AppConfig


class TasksConfig(AppConfig):
    name = "apps.tasks"
    label = "tasks"

    def ready(self) -> None:
        from apps.evaluations import signals
        from apps.tasks import progress

        signals.evaluation_ended.connect(progress.on_evaluation_ended, dispatch_uid="tasks.progress")
