"""Signals other parts (and apps above this one) listen to, so this app never imports them."""

from django.dispatch import Signal

# Sent once an evaluation's end is recorded and published, by every terminal path
# (``publisher.publish_end``), with ``evaluation``. Receivers must not raise.
evaluation_ended = Signal()
