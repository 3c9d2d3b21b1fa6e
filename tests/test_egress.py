"""Every known way to point a callback at the gateway's own machine or a metadata service."""

from __future__ import annotations

import ipaddress

import httpx
import pytest

from service.egress import BlockedDestination, DestinationPolicy, UnresolvedHost
from tests.factories import ADMIN, make_team, task_body

DEFAULT = DestinationPolicy()

BLOCKED = [
    "http://127.0.0.1/hook",
    "http://127.9.9.9:8080/hook",
    "http://[::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",  # IPv4-mapped
    "http://[::ffff:7f00:1]/hook",  # IPv4-mapped, hex
    "http://[::127.0.0.1]/hook",  # IPv4-compatible
    "http://[64:ff9b::7f00:1]/hook",  # NAT64 of 127.0.0.1
    "http://[64:ff9b::a9fe:a9fe]/hook",  # NAT64 of the metadata address
    "http://[2002:7f00:1::]/hook",  # 6to4 of 127.0.0.1
    "http://0.0.0.0/hook",
    "http://[::]/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fe80::1]/hook",
    "http://[fd00:ec2::254]/hook",
    "http://2130706433/hook",  # 127.0.0.1 as one decimal number
    "http://0x7f000001/hook",  # hex
    "http://0x7f.1/hook",
    "http://017700000001/hook",  # octal
    "http://127.1/hook",
    "http://224.0.0.1/hook",
    "http://[ff02::1]/hook",
    "http://255.255.255.255/hook",
    "ftp://files.internal/hook",
    "file:///etc/passwd",
    "gopher://10.0.0.1:70/",
]


@pytest.mark.parametrize("url", BLOCKED)
def test_blocked_forms_are_refused_at_submit_time(url: str) -> None:
    with pytest.raises(BlockedDestination):
        DEFAULT.check_url(url)


@pytest.mark.parametrize(
    "url", ["http://10.1.2.3/hook", "https://192.168.0.10:8443/x", "http://[fd12::1]/h"]
)
def test_private_ranges_are_allowed(url: str) -> None:
    DEFAULT.check_url(url)


async def test_names_are_checked_at_connect_time_by_what_they_resolve_to() -> None:
    # A name passes the submit-time check; what it resolves to is judged when dialling.
    DEFAULT.check_url("http://localhost:9/hook")
    with pytest.raises(BlockedDestination, match="not allowed"):
        await DEFAULT.resolve("localhost", 9)
    with pytest.raises(UnresolvedHost, match="does not resolve"):  # retried, not blocked
        await DEFAULT.resolve("no-such-host.invalid", 80)


def test_operator_lists_override_the_defaults() -> None:
    opened = DestinationPolicy.from_settings("127.0.0.0/8", "")
    opened.check_url("http://127.0.0.1:8080/hook")
    opened.check_url("http://[::ffff:127.0.0.1]/hook")  # judged by the IPv4 it carries
    closed = DestinationPolicy.from_settings("", "10.0.0.0/8, fd00::/8")
    with pytest.raises(BlockedDestination):
        closed.check_url("http://10.20.30.40/hook")
    with pytest.raises(BlockedDestination):
        closed.check_url("http://[fd12::1]/hook")
    with pytest.raises(BlockedDestination):  # the defaults still apply
        closed.check_address(ipaddress.ip_address("169.254.169.254"))


async def test_the_api_refuses_a_blocked_callback_and_stores_nothing(
    client: httpx.AsyncClient, db: object
) -> None:
    team = await make_team(client)
    answer = await client.post(
        "/v1/tasks",
        json=task_body(callback_url="http://169.254.169.254/latest/meta-data/"),
        headers=team.headers,
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == "callback_url"
    listed = await client.get("/v1/tasks", headers=team.headers)
    assert listed.json()["data"] == []


async def test_a_blocked_alert_url_is_refused(client: httpx.AsyncClient) -> None:
    answer = await client.post(
        "/admin/teams",
        json={"name": "alerts-to-metadata", "alert_url": "http://[::ffff:169.254.169.254]/"},
        headers=ADMIN,
    )
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "alert_url"


@pytest.mark.parametrize("url", ["http://[::1/hook", "http://host:99999/", "http://a[b/"])
def test_malformed_urls_are_refused_not_crashed_on(url: str) -> None:
    with pytest.raises(BlockedDestination):
        DEFAULT.check_url(url)
