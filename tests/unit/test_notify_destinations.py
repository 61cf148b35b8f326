"""Which webhook destinations the operator refuses: addresses (IPv4, IPv6, IPv4 carried in
IPv6) and names, by default, with internal destinations allowed, and with named hosts."""

from __future__ import annotations

import ipaddress

import pytest

from segue.notify.destinations import (
    Destinations,
    classify_address,
    classify_name,
)

DEFAULT = Destinations()
INTERNAL_OK = Destinations.of(allow_internal=True)


@pytest.mark.parametrize(
    ("address", "category"),
    [
        # IPv4
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("169.254.169.254", "link-local"),
        ("169.254.0.1", "link-local"),
        ("10.96.0.1", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "shared"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "reserved"),
        ("224.0.0.251", "multicast"),
        ("255.255.255.255", "reserved"),
        ("240.0.0.1", "reserved"),
        ("192.0.2.10", "reserved"),  # documentation
        ("198.18.0.1", "reserved"),  # benchmarking
        ("8.8.8.8", None),
        ("172.32.0.1", None),
        ("100.128.0.1", None),
        # IPv6
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("febf::1", "link-local"),
        ("fc00::1", "private"),
        ("fd00:ec2::254", "private"),  # the IPv6 metadata address of EC2
        ("fec0::1", "private"),
        ("ff02::1", "multicast"),
        ("2001:db8::1", "reserved"),
        ("2606:4700:4700::1111", None),
        # IPv4 carried in IPv6: judged by the IPv4 address
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "link-local"),
        ("::ffff:10.0.0.1", "private"),
        ("::ffff:8.8.8.8", None),
        ("::127.0.0.1", "loopback"),
        ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64 of 169.254.169.254
        ("64:ff9b::808:808", None),
        ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
        ("2002:a9fe:a9fe::1", "link-local"),
    ],
)
def test_addresses_are_classified(address: str, category: str | None) -> None:
    assert classify_address(ipaddress.ip_address(address)) == category


@pytest.mark.parametrize(
    ("name", "category"),
    [
        ("localhost", "loopback"),
        ("LOCALHOST.", "loopback"),
        ("app.localhost", "loopback"),
        ("alerts", "internal name"),
        ("alerts.", "internal name"),
        ("alerts.monitoring.svc", "internal name"),
        ("alerts.monitoring.svc.cluster.local", "internal name"),
        ("alerts.monitoring.svc.cluster.local.", "internal name"),
        ("kubernetes.default.svc", "internal name"),
        ("node.cluster.local", "internal name"),
        ("printer.local", "internal name"),
        ("metadata.google.internal", "internal name"),
        ("hooks.slack.com", None),
        ("svc.example.com", None),
        ("alerts.monitoring", None),  # judged by the addresses it resolves to
    ],
)
def test_names_are_classified(name: str, category: str | None) -> None:
    assert classify_name(name) == category


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "::1",
        "[::1]",
        "::ffff:7f00:1",
        "10.0.0.5",
        "100.64.3.4",
        "fd12:3456::1",
        "localhost",
        "alerts.monitoring.svc.cluster.local",
        "alerts",
    ],
)
def test_internal_hosts_are_refused_by_default_and_allowed_by_the_flag(host: str) -> None:
    refusal = DEFAULT.check_host(host)
    assert refusal is not None and refusal.internal
    assert "--allow-internal-webhooks" in str(refusal)
    assert f"--allow-webhook-host={host}" in str(refusal)
    assert INTERNAL_OK.check_host(host) is None


@pytest.mark.parametrize(
    "host",
    [
        *("169.254.169.254", "fe80::1", "fe80::1%25eth0", "::ffff:169.254.169.254"),
        *("0.0.0.0", "::", "224.0.0.1", "ff02::1", "255.255.255.255", "240.0.0.1"),
    ],
)
def test_link_local_unspecified_multicast_and_reserved_need_the_host_named(host: str) -> None:
    for destinations in (DEFAULT, INTERNAL_OK):
        refusal = destinations.check_host(host)
        assert refusal is not None and not refusal.internal
        assert "--allow-internal-webhooks" not in str(refusal)
        assert f"--allow-webhook-host={host}" in str(refusal)
    assert Destinations.of(allow_hosts=[host]).check_host(host) is None


def test_the_metadata_address_says_what_lives_there() -> None:
    refusal = INTERNAL_OK.check_host("169.254.169.254")
    assert str(refusal) == (
        "169.254.169.254 is a link-local address, where cloud metadata services live; "
        "allowed only when the operator runs with --allow-webhook-host=169.254.169.254"
    )


@pytest.mark.parametrize("host", ["127.1", "2130706433", "0177.0.0.1", "1.2.3.4.5"])
def test_numbers_that_are_no_canonical_address_are_refused(host: str) -> None:
    for destinations in (DEFAULT, INTERNAL_OK):
        refusal = destinations.check_host(host)
        assert refusal is not None and refusal.category == "non-canonical address"
        assert "canonical form" in refusal.fix


def test_public_hosts_pass() -> None:
    for host in ("hooks.slack.com", "8.8.8.8", "2606:4700:4700::1111", "chat.example.org"):
        assert DEFAULT.check_host(host) is None


def test_resolved_addresses_are_judged_for_the_name() -> None:
    refusal = DEFAULT.check_address("hooks.example.com", "127.0.0.1")
    assert refusal is not None
    assert refusal.reason == "hooks.example.com resolves to 127.0.0.1, a loopback address"
    assert "--allow-webhook-host=hooks.example.com" in refusal.fix
    assert DEFAULT.check_address("hooks.example.com", "93.184.215.14") is None
    assert DEFAULT.check_address("hooks.example.com", "::ffff:10.0.0.1") is not None
    assert DEFAULT.check_address("hooks.example.com", "not an address") is not None
    assert INTERNAL_OK.check_address("hooks.example.com", "10.0.0.1") is None
    assert INTERNAL_OK.check_address("hooks.example.com", "169.254.169.254") is not None


def test_named_hosts_are_allowed_whatever_they_resolve_to() -> None:
    d = Destinations.of(allow_hosts=["Alerts.Monitoring.svc.", "*.corp.example", " "])
    assert d.allow_hosts == frozenset({"alerts.monitoring.svc", "*.corp.example"})
    assert d.check_host("alerts.monitoring.svc") is None
    assert d.check_address("alerts.monitoring.svc", "10.96.4.2") is None
    assert d.check_host("hooks.corp.example") is None
    assert d.check_address("a.b.corp.example", "169.254.169.254") is None
    # The pattern is for names under it, not the name itself nor look-alikes.
    assert d.check_address("corp.example", "10.0.0.1") is not None
    assert d.check_address("evilcorp.example", "10.0.0.1") is not None
    assert d.check_host("alerts.other.svc") is not None


def test_named_addresses_match_in_any_spelling() -> None:
    d = Destinations.of(allow_hosts=["::FFFF:127.0.0.1", "[FE80::1]"])
    assert d.check_host("::ffff:7f00:1") is None
    assert d.check_host("fe80::1") is None
    assert d.check_host("::ffff:7f00:2") is not None
