"""Every known way to point a callback at the gateway's own machine, a metadata service or
the company's network, and how operators open destinations for the company or a team."""

from __future__ import annotations

import ipaddress

import httpx
import pytest

from service.platform.egress import (
    BlockedDestination,
    DestinationPolicy,
    Openings,
    UnresolvedHost,
    normal_openings,
)
from service.platform.errors import InvalidRequest
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
    # The company's network: closed unless an operator opens it.
    "http://10.1.2.3/hook",
    "https://192.168.0.10:8443/x",
    "http://172.16.5.4/hook",
    "http://172.31.255.1/hook",
    "http://100.64.0.7/hook",  # CGNAT
    "http://100.100.100.200/latest/meta-data/",  # Alibaba metadata, inside CGNAT
    "http://[fd12::1]/h",
    "http://[::ffff:10.0.0.1]/hook",
    "http://[64:ff9b::c0a8:1]/hook",  # NAT64 of 192.168.0.1
    "http://167772161/hook",  # 10.0.0.1 as one number
    "http://198.18.0.1/hook",  # benchmarking range, not public
]


@pytest.mark.parametrize("url", BLOCKED)
def test_blocked_forms_are_refused_at_submit_time(url: str) -> None:
    with pytest.raises(BlockedDestination):
        DEFAULT.check_url(url)


@pytest.mark.parametrize(
    "url", ["http://8.8.8.8/hook", "https://[2001:4860::8888]/x", "http://[::ffff:1.1.1.1]/"]
)
def test_public_addresses_are_open_by_default(url: str) -> None:
    DEFAULT.check_url(url)


def test_a_teams_openings_add_to_the_companys() -> None:
    company = DestinationPolicy.from_settings("192.168.0.0/16", "")
    team = company.for_team(["10.20.0.0/16", "hooks.payments.internal"])
    team.check_url("http://10.20.3.4/hook")
    team.check_url("http://192.168.1.1/hook")  # the company's opening holds for every team
    with pytest.raises(BlockedDestination):
        company.check_url("http://10.20.3.4/hook")  # another team: closed
    with pytest.raises(BlockedDestination):
        team.check_url("http://10.21.0.1/hook")  # outside the opened CIDR
    assert company.for_team([]) is company and team is company.for_team(
        ["10.20.0.0/16", "hooks.payments.internal"]
    )


def test_host_name_openings_are_exact_or_below_a_suffix() -> None:
    opened = Openings.parse(["hooks.payments.internal", "*.svc.cluster.local"])
    assert opened.opens_host("hooks.payments.internal")
    assert opened.opens_host("HOOKS.payments.internal.")  # case and a trailing dot
    assert not opened.opens_host("evil.hooks.payments.internal")  # exact means exact
    assert opened.opens_host("api.team-a.svc.cluster.local")  # any depth below the suffix
    assert not opened.opens_host("svc.cluster.local")  # not the suffix itself
    assert not opened.opens_host("evilsvc.cluster.local")  # a label boundary, not a substring


async def test_a_host_name_opening_reaches_what_the_name_resolves_to_but_not_metadata() -> None:
    policy = DestinationPolicy.from_settings("", "", "localhost")
    assert {str(a) for a in await policy.resolve("localhost", 9)} <= {"127.0.0.1", "::1"}
    # The opening is the name's: a literal loopback address stays closed.
    with pytest.raises(BlockedDestination):
        policy.check_url("http://127.0.0.1:9/hook")
    # A name opened by the operator that resolves to a metadata service is still refused:
    # only a CIDR opens those.
    with pytest.raises(BlockedDestination):
        policy.check_address(ipaddress.ip_address("169.254.169.254"), host_opened=True)
    DestinationPolicy.from_settings("169.254.169.254/32", "").check_url("http://169.254.169.254/")


def test_some_addresses_are_never_destinations_whatever_is_opened() -> None:
    everything = DestinationPolicy.from_settings("0.0.0.0/0,::/0", "")
    everything.check_url("http://10.0.0.1/hook")
    for url in ("http://0.0.0.0/", "http://[::]/", "http://224.0.0.1/", "http://255.255.255.255/"):
        with pytest.raises(BlockedDestination, match="never"):
            everything.check_url(url)


def test_openings_are_checked_and_normalised_naming_the_entry() -> None:
    assert normal_openings(
        ["10.0.0.1/8", "Hooks.Internal.", "*.svc.cluster.local", "10.0.0.0/8", "fd00::1"],
        param="open_destinations",
    ) == ["10.0.0.0/8", "hooks.internal", "*.svc.cluster.local", "fd00::1/128"]
    for i, bad in enumerate(["10.0.0.0/33", "*", "a..b", "10.1", "http://x/", "*.*.x", "fd::/x"]):
        with pytest.raises(InvalidRequest) as refused:
            normal_openings(["ok.internal", bad], param="open_destinations")
        assert refused.value.param == "open_destinations[1]", (i, bad)


async def test_names_are_checked_at_connect_time_by_what_they_resolve_to() -> None:
    # A name passes the submit-time check; what it resolves to is judged when dialling.
    DEFAULT.check_url("http://localhost:9/hook")
    with pytest.raises(BlockedDestination, match="not open"):
        await DEFAULT.resolve("localhost", 9)
    with pytest.raises(UnresolvedHost, match="does not resolve"):  # retried, not blocked
        await DEFAULT.resolve("no-such-host.invalid", 80)


def test_operator_lists_override_the_defaults() -> None:
    opened = DestinationPolicy.from_settings("127.0.0.0/8", "")
    opened.check_url("http://127.0.0.1:8080/hook")
    opened.check_url("http://[::ffff:127.0.0.1]/hook")  # judged by the IPv4 it carries
    closed = DestinationPolicy.from_settings("", "8.8.0.0/16, 2001:4860::/32")
    with pytest.raises(BlockedDestination):
        closed.check_url("http://8.8.8.8/hook")
    with pytest.raises(BlockedDestination):
        closed.check_url("http://[2001:4860::8888]/hook")
    with pytest.raises(BlockedDestination):  # the defaults still apply
        closed.check_address(ipaddress.ip_address("169.254.169.254"))
    # Only openings: close every public address, open what may be reached.
    allow_list = DestinationPolicy.from_settings("203.0.113.0/24", "0.0.0.0/0, ::/0")
    allow_list.check_url("http://203.0.113.9/hook")  # the opening wins
    with pytest.raises(BlockedDestination):
        allow_list.check_url("http://1.1.1.1/hook")


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


@pytest.mark.parametrize("url", ["http://10.0.0.5:8080/hook", "https://192.168.10.20/hook"])
async def test_a_callback_to_the_company_network_is_refused_unless_the_team_has_it_opened(
    client: httpx.AsyncClient, url: str
) -> None:
    # Literals are judged at submit time: nothing here connects to these addresses.
    team = await make_team(client)
    refused = await client.post("/v1/tasks", json=task_body(callback_url=url), headers=team.headers)
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["param"] == "callback_url" and error["code"] == "invalid_request"
    assert (await client.get("/v1/tasks", headers=team.headers)).json()["data"] == []
    opened = await make_team(client, open_destinations=["10.0.0.0/8", "192.168.10.0/24"])
    accepted = await client.post(
        "/v1/tasks", json=task_body(callback_url=url), headers=opened.headers
    )
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["callback_url"] == url


async def test_a_teams_destinations_are_set_by_the_admin_api_and_audited(
    client: httpx.AsyncClient,
) -> None:
    team = await make_team(client)
    assert team.team["open_destinations"] == []
    path = f"/admin/teams/{team.team['id']}"
    bad = await client.patch(
        path, json={"open_destinations": ["10.0.0.0/8", "not a host"]}, headers=ADMIN
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "open_destinations[1]"
    patched = await client.patch(
        path, json={"open_destinations": ["10.1.0.0/16", "*.Hooks.Internal"]}, headers=ADMIN
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["open_destinations"] == ["10.1.0.0/16", "*.hooks.internal"]
    # The team's key sees it at once: the opened range is accepted at submit.
    await client.post(
        "/v1/tasks", json=task_body(callback_url="http://10.1.2.3/h"), headers=team.headers
    )
    assert (await client.get("/v1/tasks", headers=team.headers)).json()["data"]
    audit = (await client.get("/admin/audit", headers=ADMIN)).json()["data"]
    change = next(
        e for e in audit if e["action"] == "team.update" and e["target_id"] == team.team["id"]
    )
    assert change["before"] == {"open_destinations": []}
    assert change["after"] == {"open_destinations": ["10.1.0.0/16", "*.hooks.internal"]}
    # An alert URL is judged by the team's destinations as they will be.
    alert = await client.patch(path, json={"alert_url": "http://10.1.0.9/alerts"}, headers=ADMIN)
    assert alert.status_code == 200, alert.text
    closed = await client.patch(
        path, json={"open_destinations": [], "alert_url": "http://10.1.0.9/a"}, headers=ADMIN
    )
    assert closed.status_code == 400 and closed.json()["error"]["param"] == "alert_url"
