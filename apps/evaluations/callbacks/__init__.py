"""Completion callbacks: signed POSTs to a URL the owner gave, when something they submitted ends.

- ``targets``: the one check of a callback URL (http(s), length, and SSRF: every address it resolves
  to must be public unless ``CALLBACK_ALLOWED_HOSTS`` allows it); the checked addresses are the ones
  connected to.
- ``signing``: ``X-Crucible-Signature: sha256=<hex HMAC-SHA256 of the raw body>`` with the owner's
  webhook secret (apps.accounts).
- ``transport``: one POST to a checked target, to the checked address, bounded, no redirects.
- ``delivery``: ``schedule(owner, url, event_type, subject_id, payload)`` (exactly once per event and
  subject), the attempt job with retries and backoff, and the reconciler's sweep. Generic: batches
  (apps.tasks) call ``targets.validate`` at submission and ``delivery.schedule`` when they end.
- ``events``: the evaluation's own ``evaluation.finished``.
"""
