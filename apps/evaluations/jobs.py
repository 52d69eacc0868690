"""RQ jobs: thin wrappers over the run service (they receive ids, never instances).

The reconciler is not a job: ``python -m crucible.cron`` runs it in its own loop (see crucible/cron.py).
"""

from apps.evaluations import builds, running
from apps.evaluations.callbacks import delivery
from crucible.logcontext import bound


def run_evaluation(evaluation_id: str) -> str:
    """Run one evaluation (and the samples of its batch its end keeps for this job: ``running.run``);
    returns what was done with it (a ``running.RunDisposition`` value). Every log line of a run carries
    its ``evaluation_id``."""
    return str(running.run(evaluation_id))


def deliver_callback(delivery_id: str) -> str:
    """Make the due attempt of one completion callback (see callbacks.delivery); never raises for the
    receiver's failures: the next attempt is scheduled by the delivery itself."""
    return delivery.deliver(delivery_id)


def build_runtime_image(build_id: int) -> str:
    """Build one runtime's image (a job of the ``builds`` queue, run by ``crucible_builder``); returns
    what was done (a ``builds.RunDisposition`` value)."""
    with bound(runtime_build=build_id):
        return str(builds.run(build_id, name=running.worker_name()))
