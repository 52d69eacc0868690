"""The kill switch as operators use it: one action over everything that runs user code.

``apps.evaluations.killswitch.engage`` pauses the queues and stops every running evaluation; the
sessions app is its sibling (neither imports the other), so ending every live session is joined to
it here, above both. The order matters: the switch is engaged first, so ``sessions.services.create``
refuses new sessions (it reads the same flag) before the live ones are ended.
"""

from __future__ import annotations

from dataclasses import dataclass

from apps.evaluations import killswitch
from apps.sessions import services as sessions
from apps.sessions.models import EndReason


@dataclass(frozen=True)
class Engaged:
    stopped: list[str]  # evaluations emergency-stopped
    sessions_ended: list[str]  # sessions ended with reason kill_switch


def engage(actor=None, request=None) -> Engaged:
    """Engage the kill switch: pause the queues, stop every running evaluation, end every live session."""
    stopped = killswitch.engage(actor, request)
    ended = sessions.end_all(EndReason.KILL_SWITCH, actor=actor, request=request)
    return Engaged(stopped=stopped, sessions_ended=ended)
