from django.apps import AppConfig


class EvaluationsConfig(AppConfig):
    name = "apps.evaluations"
    label = "evaluations"

    def ready(self) -> None:
        from apps.evaluations import dispatch, signals

        signals.evaluation_ended.connect(dispatch.on_evaluation_ended, dispatch_uid="evaluations.dispatch")
