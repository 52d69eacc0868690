"""Where a callback may go (callbacks.targets): the URL's form, and every address its host resolves to
must be public unless CALLBACK_ALLOWED_HOSTS allows it. DNS is replaced only where a test needs an
answer the machine's resolver cannot give."""

import ipaddress

import pytest

from apps.evaluations.callbacks import targets
from apps.evaluations.callbacks.targets import CallbackUrlRefused


@pytest.fixture
def nothing_allowed(settings):
    settings.CALLBACK_ALLOWED_HOSTS = []


@pytest.fixture
def dns(monkeypatch):
    """A resolver with the answers a test sets: ``dns["hooks.example"] = ["203.0.113.9"]``."""
    answers: dict[str, list[str]] = {}

    def fake(host, port):
        if host not in answers:
            raise OSError("no such host")
        return [ipaddress.ip_address(a) for a in answers[host]]

    monkeypatch.setattr(targets, "_getaddrinfo", fake)
    return answers


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/hook",
        "file:///etc/passwd",
        "gopher://example.com/",
        "javascript:alert(1)",
        "example.com/hook",
        "http://",
        "http://user:pass@example.com/hook",
        "http://example.com:99999/",
        "http://exa mple.com/",
        "http://example.com/\r\nX-Injected: 1",
        "https://example.com/" + "a" * targets.MAX_URL_LENGTH,
    ],
)
def test_a_url_that_is_not_a_plain_http_or_https_url_is_refused_with_a_reason(url):
    with pytest.raises(CallbackUrlRefused) as refused:
        targets.parse(url)
    assert refused.value.message


def test_a_url_that_is_not_a_string_is_refused():
    with pytest.raises(CallbackUrlRefused, match="string"):
        targets.parse(["http://example.com/"])


def test_the_parts_of_a_good_url_are_kept_for_the_request():
    parsed = targets.parse("HTTPS://Hooks.Example.com:8443/crucible/in?team=7#fragment")
    assert (parsed.scheme, parsed.host, parsed.port, parsed.path) == (
        "https",
        "hooks.example.com",
        8443,
        "/crucible/in?team=7",
    )


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # the cloud metadata service
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "255.255.255.255",
        "240.0.0.1",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "fd12:3456::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "2001:db8::1",
    ],
)
def test_loopback_private_link_local_and_other_special_addresses_are_not_public(address):
    assert not targets.is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.215.14", "1.1.1.1", "2606:4700:4700::1111", "::ffff:1.1.1.1"])
def test_public_addresses_are_public(address):
    assert targets.is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000/hook", "http://[::1]/hook", "http://169.254.169.254/latest/meta-data/"]
)
def test_a_literal_loopback_or_link_local_address_is_refused(url, nothing_allowed):
    with pytest.raises(CallbackUrlRefused, match="CALLBACK_ALLOWED_HOSTS"):
        targets.check(url)


def test_localhost_is_refused_because_it_resolves_to_loopback(nothing_allowed):
    with pytest.raises(CallbackUrlRefused, match="non-public"):
        targets.check("http://localhost:8000/hook")


def test_a_decimal_spelling_of_loopback_is_refused(nothing_allowed):
    with pytest.raises(CallbackUrlRefused):
        targets.check("http://2130706433/hook")


def test_a_name_with_one_private_address_among_public_ones_is_refused(nothing_allowed, dns):
    dns["mixed.example"] = ["203.0.114.9", "10.0.0.5"]
    with pytest.raises(CallbackUrlRefused, match="10.0.0.5"):
        targets.check("https://mixed.example/hook")


def test_a_name_with_only_public_addresses_is_accepted_with_the_addresses_checked(nothing_allowed, dns):
    dns["hooks.example"] = ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"]
    target = targets.check("https://hooks.example/in")
    assert target.addresses == ("93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c")
    assert (target.host_header, target.path) == ("hooks.example", "/in")


def test_a_name_that_does_not_resolve_is_refused(nothing_allowed, dns):
    with pytest.raises(CallbackUrlRefused, match="does not resolve"):
        targets.check("https://nowhere.example/hook")


def test_an_operator_allows_a_host_by_its_name(settings, dns):
    dns["receiver.internal"] = ["10.0.0.7"]
    settings.CALLBACK_ALLOWED_HOSTS = ["receiver.internal"]
    assert targets.check("http://receiver.internal/hook").addresses == ("10.0.0.7",)
    with pytest.raises(CallbackUrlRefused):
        targets.check("http://10.0.0.7/hook")  # the name is allowed, not the address


def test_an_operator_allows_a_network_and_only_that_network(settings):
    settings.CALLBACK_ALLOWED_HOSTS = ["127.0.0.0/30"]
    assert targets.check("http://127.0.0.2:9/hook").addresses == ("127.0.0.2",)
    with pytest.raises(CallbackUrlRefused):
        targets.check("http://127.0.0.9:9/hook")
    with pytest.raises(CallbackUrlRefused):
        targets.check("http://10.0.0.1/hook")


def test_an_allowed_address_also_allows_its_ipv4_mapped_form(settings):
    settings.CALLBACK_ALLOWED_HOSTS = ["127.0.0.1"]
    assert targets.check("http://[::ffff:127.0.0.1]:9/hook").host_header == "[::ffff:127.0.0.1]:9"


def test_the_host_header_carries_a_port_only_when_it_is_not_the_default(settings, dns):
    dns["hooks.example"] = ["93.184.215.14"]
    assert targets.check("http://hooks.example:80/").host_header == "hooks.example"
    assert targets.check("https://hooks.example:8443/").host_header == "hooks.example:8443"
