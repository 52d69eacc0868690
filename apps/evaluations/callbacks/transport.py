"""One POST of a callback to a checked ``Target``, connecting only to the addresses that were checked.

The connection goes to the address itself (``urllib3`` pool on the IP), with the URL's host in the
``Host`` header and, for https, in SNI and in the certificate check: DNS is never asked again, so
the address the rule allowed is the address that is reached. No redirect is followed, no proxy from
the environment is used, the connection and each read are bounded by ``CALLBACK_TIMEOUT_S``, and the
answer's body is never read (only its status). The next address is tried only when connecting failed.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

import urllib3
from django.conf import settings
from urllib3.exceptions import ConnectTimeoutError, HTTPError

from apps.evaluations.callbacks.targets import Target

USER_AGENT = "crucible-callbacks/1"
# At most this many of a host's addresses are tried (each may take CALLBACK_TIMEOUT_S to refuse).
MAX_ADDRESSES_TRIED = 3


@dataclass(frozen=True)
class Answer:
    """What one attempt got: an HTTP status, or ``error`` (for people) when there was none."""

    status_code: int | None = None
    error: str = ""
    address: str = ""  # the address it connected to (or tried last)

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def post(target: Target, body: bytes, headers: dict[str, str]) -> Answer:
    """POST ``body`` to ``target``: the first of its addresses (at most ``MAX_ADDRESSES_TRIED``) that
    accepts a connection gets it."""
    error = "no address to connect to"
    for address in target.addresses[:MAX_ADDRESSES_TRIED]:
        try:
            return _post_to(address, target, body, headers)
        except ConnectTimeoutError as exc:  # also a refused or unreachable connection (NewConnectionError)
            error = f"could not connect to {address}: {_short(exc)}"
        except (HTTPError, OSError, ssl.SSLError) as exc:
            return Answer(error=f"{type(exc).__name__} from {address}: {_short(exc)}", address=address)
    return Answer(error=error, address=target.addresses[-1] if target.addresses else "")


def _post_to(address: str, target: Target, body: bytes, headers: dict[str, str]) -> Answer:
    timeout = urllib3.Timeout(connect=settings.CALLBACK_TIMEOUT_S, read=settings.CALLBACK_TIMEOUT_S)
    pool = _pool(address, target, timeout)
    try:
        response = pool.urlopen(
            "POST",
            target.path,
            body=body,
            headers={**headers, "Host": target.host_header, "User-Agent": USER_AGENT},
            retries=False,
            redirect=False,
            preload_content=False,
            assert_same_host=False,
        )
        response.release_conn()
        return Answer(status_code=response.status, address=address)
    finally:
        pool.close()


def _pool(address: str, target: Target, timeout: urllib3.Timeout) -> urllib3.HTTPConnectionPool:
    if target.scheme == "https":
        return urllib3.HTTPSConnectionPool(
            address,
            target.port,
            timeout=timeout,
            maxsize=1,
            cert_reqs="CERT_REQUIRED",
            server_hostname=target.host,
            assert_hostname=target.host,
        )
    return urllib3.HTTPConnectionPool(address, target.port, timeout=timeout, maxsize=1)


def _short(exc: Exception) -> str:
    return " ".join(str(exc).split())[:300]
