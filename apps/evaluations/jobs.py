"""RQ jobs: thin wrappers over the run and reconcile services (they receive ids, never instances)."""

from apps.evaluations import reconciler, running


def run_evaluation(evaluation_id: str) -> str:
    return running.run(evaluation_id)


def reconcile() -> dict:
    return reconciler.reconcile()
