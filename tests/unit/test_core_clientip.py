"""core.clientip: the one client-address rule (right to left over X-Forwarded-For)."""

from __future__ import annotations

import pytest

from paysys.core.clientip import (
    SCOPE_KEY,
    UNKNOWN_PEER,
    Forwarded,
    TrustedProxies,
    client_key,
    forwarded_for_header,
    normalise,
    resolve_scope,
)

PROXIES = TrustedProxies(["10.0.0.0/8", "192.168.1.1", "2001:db8:ffff::/48"])


def test_untrusted_peer_is_the_client_whatever_it_forwards() -> None:
    assert PROXIES.resolve("203.0.113.5", "1.1.1.1") == Forwarded(
        "203.0.113.5", "203.0.113.5", False
    )
    assert TrustedProxies([]).resolve("10.0.0.1", "1.1.1.1").ip == "10.0.0.1"


def test_walks_right_to_left_skipping_only_trusted_hops() -> None:
    resolved = PROXIES.resolve("10.0.0.5", "6.6.6.6, 7.7.7.7, 192.168.1.1, 10.2.3.4")
    assert resolved == Forwarded("7.7.7.7", "7.7.7.7, 192.168.1.1, 10.2.3.4, 10.0.0.5", True)


def test_spoofed_left_hops_are_ignored() -> None:
    """A client sending its own X-Forwarded-For only adds hops left of the real one."""
    spoofed = PROXIES.resolve("10.0.0.5", "1.2.3.4, 203.0.113.9")
    honest = PROXIES.resolve("10.0.0.5", "203.0.113.9")
    assert spoofed.ip == honest.ip == "203.0.113.9"
    # ...even when the spoofed hops name trusted addresses
    assert PROXIES.resolve("10.0.0.5", "10.9.9.9, 203.0.113.9").ip == "203.0.113.9"


def test_all_trusted_hops_give_the_left_most() -> None:
    assert PROXIES.resolve("10.0.0.5", "10.1.1.1, 192.168.1.1").ip == "10.1.1.1"
    assert PROXIES.resolve("10.0.0.5", None) == Forwarded("10.0.0.5", "10.0.0.5", True)
    assert PROXIES.resolve("10.0.0.5", " , ").ip == "10.0.0.5"


@pytest.mark.parametrize(
    ("forwarded", "client"),
    [
        ("junk, 10.1.1.1", "10.1.1.1"),  # not an address: stop at the hop that wrote it
        ("203.0.113.9, junk", "10.0.0.5"),  # the peer wrote junk: the peer is the client
        ("203.0.113.9, 300.1.1.1", "10.0.0.5"),
        ("203.0.113.9, [2001:db8::1", "10.0.0.5"),  # unclosed bracket
        ("203.0.113.9,, 10.1.1.1", "203.0.113.9"),  # empty list members are skipped
        ("unknown", "10.0.0.5"),
        # a zone id is text of any length and content (`ipaddress` takes `fe80::1%<anything>`)
        ("203.0.113.9, fe80::1%" + "x" * 5000, "10.0.0.5"),
        ("fe80::1%eth0, 10.1.1.1", "10.1.1.1"),
    ],
)
def test_invalid_entries_end_the_walk(forwarded: str, client: str) -> None:
    assert PROXIES.resolve("10.0.0.5", forwarded).ip == client


def test_addresses_are_normalised() -> None:
    assert normalise(" 2001:DB8:0:0::1 ") == "2001:db8::1"
    assert normalise("[2001:db8::1]:443") == "2001:db8::1"
    assert normalise("[2001:db8::1]") == "2001:db8::1"
    assert normalise("203.0.113.9:51234") == "203.0.113.9"
    assert normalise("::ffff:10.1.2.3") == "10.1.2.3"
    assert normalise("nope") is None and normalise("") is None
    # normalised before the trust check and in the forwarded chain
    assert PROXIES.resolve("::ffff:10.0.0.5", "2001:DB8::7, [2001:db8:ffff::1]:80") == Forwarded(
        "2001:db8::7", "2001:db8::7, 2001:db8:ffff::1, 10.0.0.5", True
    )


def test_client_key_groups_ipv6_by_64() -> None:
    assert client_key("203.0.113.9") == "203.0.113.9"
    one = client_key("2001:db8:1:2:aaaa::1")
    assert one == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:2:ffff:ffff:ffff:ffff") == one
    assert client_key("2001:db8:1:3::1") != one
    assert client_key(UNKNOWN_PEER) == UNKNOWN_PEER


def test_invalid_proxy_entries_are_ignored() -> None:
    proxies = TrustedProxies(["not-a-network", " ", "127.0.0.0/8"])
    assert proxies.enabled
    assert proxies.resolve("127.0.0.1", "203.0.113.9").ip == "203.0.113.9"
    assert not TrustedProxies(["not-a-network"]).enabled


def test_scope_resolution_is_done_once() -> None:
    scope = {
        "client": ("10.0.0.5", 1234),
        "headers": [
            (b"x-forwarded-for", b"1.1.1.1, 203.0.113.9"),
            (b"host", b"x"),
            (b"x-forwarded-for", b"198.51.100.2"),
        ],
    }
    assert forwarded_for_header(scope) == "1.1.1.1, 203.0.113.9, 198.51.100.2"
    first = resolve_scope(scope, PROXIES)
    assert first.ip == "198.51.100.2" and scope[SCOPE_KEY] is first
    assert resolve_scope(scope, TrustedProxies([])) is first
    no_peer = {"headers": [(b"x-forwarded-for", b"203.0.113.9")]}
    assert resolve_scope(no_peer, PROXIES).ip == UNKNOWN_PEER
    assert forwarded_for_header({"headers": []}) is None
