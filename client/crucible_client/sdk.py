"""``Client``: the typed, synchronous SDK for one Crucible.

    from crucible_client import Client

    client = Client()  # CRUCIBLE_URL (default http://127.0.0.1:8000) and CRUCIBLE_TOKEN
    evaluation = client.evaluations.submit("print(6 * 7)", timeout_s=10)
    print(client.evaluations.wait(evaluation["id"])["status"])

    sandbox = client.sandboxes.create(language="python")
    result = client.sandboxes.exec(sandbox["id"], ["python3", "-c", "print(1 + 1)"])
    client.sandboxes.delete(sandbox["id"])

Resources: ``evaluations``, ``batches``, ``tasks``, ``sandboxes``. Errors are the classes of
``crucible_client.errors``; retries are described in ``crucible_client._transport``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from urllib.parse import urlencode, urlparse, urlunparse

import requests

from crucible_client._transport import Transport
from crucible_client._util import segment
from crucible_client.batches import Batches
from crucible_client.evaluations import Evaluations
from crucible_client.sandboxes import Sandboxes
from crucible_client.tasks import Tasks

DEFAULT_URL = "http://127.0.0.1:8000"


class Client:
    """One Crucible and one personal API token (``url``/``token``, else ``CRUCIBLE_URL``/``CRUCIBLE_TOKEN``)."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        max_retries: int = 4,
        backoff_s: float = 0.5,
        max_retry_wait_s: float = 60.0,
        session: requests.Session | None = None,
        user_agent: str | None = None,
        sleep: Callable[[float], None] | None = None,
    ):
        url = url or os.environ.get("CRUCIBLE_URL") or DEFAULT_URL
        token = token if token is not None else os.environ.get("CRUCIBLE_TOKEN")
        extra = {"sleep": sleep} if sleep is not None else {}
        self.transport = Transport(
            url,
            token,
            timeout=timeout,
            max_retries=max_retries,
            backoff_s=backoff_s,
            max_retry_wait_s=max_retry_wait_s,
            session=session,
            user_agent=user_agent,
            **extra,
        )
        self.evaluations = Evaluations(self.transport)
        self.batches = Batches(self.transport)
        self.tasks = Tasks(self.transport)
        self.sandboxes = Sandboxes(self.transport)

    @property
    def url(self) -> str:
        return self.transport.url

    @property
    def token(self) -> str | None:
        return self.transport.token

    def close(self) -> None:
        self.transport.close()

    def runtimes(self) -> list[dict]:
        """The enabled runtimes: ``name``, ``version``, ``compiled``, ``file_name``, ``available``."""
        return self.transport.json("GET", "/api/v1/runtimes/")

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:  # never the token
        return f"Client(url={self.url!r})"

    # --- WebSockets (live streams) -------------------------------------------------------------
    def ws_url(self, kind: str, object_id: str, after: int = 0) -> str:
        """``ws(s)://…/ws/<kind>/<id>/?after=N``: kind is ``evaluations``, ``batches`` or ``sandboxes``."""
        parsed = urlparse(self.url)
        scheme = "wss" if parsed.scheme == "https" else "ws"
        path = f"{parsed.path.rstrip('/')}/ws/{kind}/{segment(object_id)}/"
        return urlunparse((scheme, parsed.netloc, path, "", urlencode({"after": after}), ""))

    @property
    def origin(self) -> str:
        """The Origin to send on WebSockets: the server's own (the server checks it, as browsers send one)."""
        parsed = urlparse(self.url)
        return f"{parsed.scheme}://{parsed.netloc}"
