"""Where a callback may go: the one check of a callback URL, at submission and before every delivery.

A callback URL is ``http`` or ``https``, at most ``MAX_URL_LENGTH`` characters, with a host and no
credentials. Its host is resolved once (``resolve``), and every address it resolves to must be public:
loopback, private, link-local, unspecified, multicast, reserved and other special-purpose addresses
(also when wrapped in IPv6: IPv4-mapped, 6to4, Teredo, NAT64) are refused, unless the operator lists
the host name, or a network holding that address, in ``CALLBACK_ALLOWED_HOSTS``. The ``Target`` this
returns carries the addresses it checked; the transport connects to those and never resolves again,
so a DNS answer that changes between the check and the connection (DNS rebinding) gains nothing.

Used by evaluations (``callback_url``) and by anything above them that sends callbacks (batches).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

MAX_URL_LENGTH = 2000
RESOLVE_TIMEOUT_S = 5.0

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Special-purpose ranges (IANA's IPv4 and IPv6 special-purpose registries) that are never a public
# receiver; ``is_global`` is checked as well, this list makes the rule independent of the Python
# version's idea of it.
NOT_PUBLIC = tuple(
    ipaddress.ip_network(net)
    for net in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/128",
        "::1/128",
        "64:ff9b:1::/48",
        "100::/64",
        "2001::/23",
        "2001:db8::/32",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
    )
)


class CallbackUrlRefused(ValueError):
    """The URL may not receive callbacks; ``message`` says why, for the person who gave it."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Target:
    """A checked callback URL: what to connect to (``addresses``, in order) and what to ask for."""

    url: str
    scheme: str
    host: str  # the name (or address) as written, lower-case, for the Host header and TLS
    port: int
    path: str  # path and query, as sent in the request line
    addresses: tuple[str, ...]

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


@dataclass(frozen=True)
class _Parsed:
    scheme: str
    host: str
    port: int
    path: str


def parse(url) -> _Parsed:
    """The parts of a callback URL, or CallbackUrlRefused naming what is wrong with it. No I/O."""
    if not isinstance(url, str):
        raise CallbackUrlRefused("Must be a string.")
    if len(url) > MAX_URL_LENGTH:
        raise CallbackUrlRefused(f"Must be at most {MAX_URL_LENGTH} characters.")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise CallbackUrlRefused("Must not contain spaces or control characters.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise CallbackUrlRefused(f"Not a valid URL ({exc}).") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise CallbackUrlRefused("Must be an http:// or https:// URL.")
    if parts.username is not None or parts.password is not None:
        raise CallbackUrlRefused("Must not contain a user name or password; check X-Crucible-Signature instead.")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise CallbackUrlRefused("Must name a host.")
    try:
        host.encode("idna")
    except UnicodeError:
        raise CallbackUrlRefused("The host name is not valid.") from None
    scheme = parts.scheme.lower()
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return _Parsed(scheme, host, port or (443 if scheme == "https" else 80), path)


def check(url) -> Target:
    """Parse ``url``, resolve its host once and check every address; CallbackUrlRefused if it may not be used."""
    parsed = parse(url)
    addresses = resolve(parsed.host, parsed.port)
    refused = [a for a in addresses if not allowed(parsed.host, a)]
    if refused:
        where = f"{parsed.host} is" if _as_address(parsed.host) else f"{parsed.host} resolves to {refused[0]},"
        raise CallbackUrlRefused(
            f"{where} a loopback, private, link-local or otherwise non-public address; callbacks go only "
            "to public addresses unless the operator allows this host in CALLBACK_ALLOWED_HOSTS."
        )
    return Target(url, parsed.scheme, parsed.host, parsed.port, parsed.path, tuple(str(a) for a in addresses))


def validate(url) -> str:
    """``url`` if it may receive callbacks now, else CallbackUrlRefused (what a submission calls)."""
    check(url)
    return url


# --- resolving ------------------------------------------------------------------------------------


def _getaddrinfo(host: str, port: int) -> list[IPAddress]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(sockaddr[0].split("%", 1)[0])
        if address not in found:
            found.append(address)
    return found


def resolve(host: str, port: int) -> list[IPAddress]:
    """The addresses of ``host`` (an address stays itself), waiting at most ``RESOLVE_TIMEOUT_S``.

    The lookup runs in a thread of its own (``getaddrinfo`` has no timeout), started per call rather
    than kept in a pool: a pool's threads would not survive a worker's fork."""
    literal = _as_address(host)
    if literal is not None:
        return [literal]
    outcome: dict = {}

    def lookup():
        try:
            outcome["addresses"] = _getaddrinfo(host, port)
        except (OSError, UnicodeError, ValueError) as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=lookup, name="callback-resolver", daemon=True)
    thread.start()
    thread.join(RESOLVE_TIMEOUT_S)
    if thread.is_alive():
        raise CallbackUrlRefused(f"The host {host} did not resolve within {RESOLVE_TIMEOUT_S:g} s.")
    if not outcome.get("addresses"):
        raise CallbackUrlRefused(f"The host {host} does not resolve.")
    return outcome["addresses"]


def _as_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


# --- the rule -------------------------------------------------------------------------------------


def is_public(address: IPAddress) -> bool:
    """A routable, unicast, public address; an IPv4 address wrapped in IPv6 must be public too."""
    if address.version == 6 and address.ipv4_mapped is not None:
        return is_public(address.ipv4_mapped)  # ::ffff:a.b.c.d is a.b.c.d, whatever ``is_global`` says of it
    if not address.is_global or address.is_multicast or address.is_reserved or address.is_unspecified:
        return False
    if any(address in net for net in NOT_PUBLIC if net.version == address.version):
        return False
    return all(is_public(inner) for inner in _embedded_ipv4(address))


def _embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address leads to: IPv4-mapped, 6to4, Teredo (both ends), NAT64."""
    if address.version != 6:
        return []
    inner = [address.ipv4_mapped, address.sixtofour, *(address.teredo or ())]
    if address in ipaddress.ip_network("64:ff9b::/96"):
        inner.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return [a for a in inner if a is not None]


def allowed_by_operator(host: str, address: IPAddress) -> bool:
    """The host name, or a network holding ``address``, is listed in ``CALLBACK_ALLOWED_HOSTS``."""
    for item in settings.CALLBACK_ALLOWED_HOSTS:
        try:
            network = ipaddress.ip_network(item, strict=False)
        except ValueError:
            if host.lower().rstrip(".") == item.lower().rstrip("."):
                return True
            continue
        candidates = [address, *_embedded_ipv4(address)]
        if any(c.version == network.version and c in network for c in candidates):
            return True
    return False


def allowed(host: str, address: IPAddress) -> bool:
    """May a callback for ``host`` connect to ``address``?"""
    return is_public(address) or allowed_by_operator(host, address)
