"""Where the gateway may send requests (webhooks, archive downloads): http(s) only, to public
addresses, and to the company's own network only where an operator opened it.

Closed unless opened: every address that is not globally routable (private 10/8,
172.16/12, 192.168/16, fc00::/7, CGNAT 100.64/10, loopback, link-local with the cloud
metadata services, documentation and reserved ranges). Operators open destinations for
the company (QGW_WEBHOOK_ALLOW_NETWORKS, QGW_WEBHOOK_ALLOW_HOSTS) or for one team (its
`open_destinations`): CIDRs, exact host names, or `*.suffix` (any name below the suffix,
not the suffix itself). A host-name opening lets that name reach the closed addresses it
resolves to, except the metadata services, which only a CIDR opens. Public addresses are
open unless QGW_WEBHOOK_DENY_NETWORKS closes them (0.0.0.0/0,::/0 makes the openings an
allow list). An opening wins over a closing. Unspecified, multicast and broadcast
addresses are never destinations.

Checked twice: when a URL is submitted (its form, and its address when it is a literal
one) and at connect time against the address actually dialled: the host name is resolved
once, every address it resolves to is checked, and the connection goes to that checked
address (the name only travels in the Host header and TLS SNI), so DNS rebinding cannot
swap in another address between check and connect. IPv4-mapped (::ffff:a.b.c.d),
IPv4-compatible, 6to4 and NAT64 (64:ff9b::/96) forms are judged by the IPv4 address they
carry.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from service.platform.errors import InvalidRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")


def _networks(*cidrs: str) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(n) for n in cidrs)


# Never a destination, whatever is opened: connecting to 0.0.0.0 reaches this machine.
_NEVER = _networks("0.0.0.0/8", "224.0.0.0/4", "240.0.0.0/4", "::/128", "ff00::/8")
# The cloud metadata services: closed unless a CIDR opens them (a host name does not).
_METADATA = _networks("169.254.169.254/32", "100.100.100.200/32", "fd00:ec2::254/128")
# Named in the docs and in log lines; anything else not globally routable is closed too.
CLOSED_BY_DEFAULT = _networks(
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "fc00::/7",
    "::1/128",
    "fe80::/10",
    "fec0::/10",
)

MAX_OPENINGS = 100
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOST_PATTERN = re.compile(rf"(?:\*\.)?(?:{_LABEL}\.)*{_LABEL}")


class UnresolvedHost(Exception):
    """The destination's name does not resolve: DNS may be down or the record not there
    yet, so the attempt fails and is retried on schedule."""


class BlockedDestination(Exception):
    """The URL may not receive requests; the message says why, naming no secret."""


def embedded_ipv4(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 form carries (mapped, compatible, 6to4, NAT64), else itself."""
    if isinstance(address, ipaddress.IPv4Address):
        return address
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64 or address in _NAT64_LOCAL:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if int(address) >> 32 == 0 and int(address) > 1:  # deprecated IPv4-compatible ::a.b.c.d
        return ipaddress.IPv4Address(int(address))
    return address


def parse_networks(text: str) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(part.strip()) for part in text.split(",") if part.strip())


def normal_host(host: str) -> str:
    return host.lower().rstrip(".")


def parse_host_pattern(text: str) -> str:
    """An exact host name or `*.suffix`, lower case; ValueError for anything else."""
    pattern = normal_host(text.strip())
    last_label = pattern.rsplit(".", 1)[-1]
    if (
        len(pattern) > 253
        or not _HOST_PATTERN.fullmatch(pattern)
        or not re.search("[a-z]", last_label)  # "10.1" or "2130706433" are addresses
    ):
        raise ValueError(f"{text!r} is neither a CIDR nor a host name (or *.suffix)")
    return pattern


def parse_opening(text: str) -> Network | str:
    """One opening: a CIDR or single address (normalised), else a host pattern."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        if ":" in text or "/" in text:
            raise ValueError(f"{text!r} is not a valid CIDR") from None
    return parse_host_pattern(text)


def normal_openings(entries: Sequence[str], *, param: str) -> list[str]:
    """Admin input as stored: each entry checked (a 400 naming it), normalised, de-duplicated."""
    if len(entries) > MAX_OPENINGS:
        raise InvalidRequest(f"{param}: at most {MAX_OPENINGS} entries", param=param)
    out: list[str] = []
    for i, entry in enumerate(entries):
        try:
            out.append(str(parse_opening(entry)))
        except ValueError as exc:
            raise InvalidRequest(f"{param}[{i}]: {exc}", param=f"{param}[{i}]") from None
    return list(dict.fromkeys(out))


@dataclass(frozen=True)
class Openings:
    """Destinations an operator opened: networks, and host names or `*.suffix` patterns."""

    networks: tuple[Network, ...] = ()
    hosts: tuple[str, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> Openings:
        networks: list[Network] = []
        hosts: list[str] = []
        for entry in entries:
            opening = parse_opening(entry)
            if isinstance(opening, str):
                hosts.append(opening)
            else:
                networks.append(opening)
        return cls(tuple(networks), tuple(hosts))

    def __add__(self, other: Openings) -> Openings:
        return Openings(self.networks + other.networks, self.hosts + other.hosts)

    def opens_host(self, host: str) -> bool:
        name = normal_host(host)
        for pattern in self.hosts:
            if pattern.startswith("*."):
                if name.endswith(pattern[1:]):
                    return True
            elif name == pattern:
                return True
        return False

    def describe(self) -> str:
        parts = [str(n) for n in self.networks] + list(self.hosts)
        return ", ".join(parts) or "nothing"


def _within(candidates: Iterable[IPAddress], networks: Iterable[Network]) -> Network | None:
    for net in networks:
        for a in candidates:
            if a.version == net.version and a in net:
                return net
    return None


@dataclass(frozen=True)
class DestinationPolicy:
    """The company's openings and closings; `for_team` adds a team's openings."""

    allow: tuple[Network, ...] = ()
    deny: tuple[Network, ...] = ()
    allow_hosts: tuple[str, ...] = ()
    _teams: dict[tuple[str, ...], DestinationPolicy] = field(
        default_factory=dict, compare=False, repr=False
    )

    @classmethod
    def from_settings(cls, allow: str, deny: str, hosts: str = "") -> DestinationPolicy:
        patterns = tuple(parse_host_pattern(h) for h in hosts.split(",") if h.strip())
        return cls(allow=parse_networks(allow), deny=parse_networks(deny), allow_hosts=patterns)

    @property
    def openings(self) -> Openings:
        return Openings(self.allow, self.allow_hosts)

    def for_team(self, entries: Sequence[str] | None) -> DestinationPolicy:
        """This policy plus a team's openings (stored entries, checked when written)."""
        if not entries:
            return self
        key = tuple(entries)
        policy = self._teams.get(key)
        if policy is None:
            team = Openings.parse(entries)
            policy = DestinationPolicy(
                allow=self.allow + team.networks,
                deny=self.deny,
                allow_hosts=self.allow_hosts + team.hosts,
            )
            if len(self._teams) >= 1024:  # bounded: teams are few, their lists change rarely
                self._teams.clear()
            self._teams[key] = policy
        return policy

    def describe(self) -> str:
        """For the start-up log line: what is open beyond public addresses."""
        closed = ", ".join(str(n) for n in self.deny) or "nothing public"
        return (
            f"opened for the company: {self.openings.describe()}; "
            f"closed unless opened: {', '.join(str(n) for n in CLOSED_BY_DEFAULT)}, metadata "
            f"and every other non-public range; also closed: {closed}"
        )

    def check_address(self, address: IPAddress, *, host_opened: bool = False) -> None:
        judged = embedded_ipv4(address)
        candidates = (address, judged)
        if _within(candidates, _NEVER) or judged.is_multicast or judged.is_unspecified:
            raise BlockedDestination(f"address {address} is never a destination")
        if _within(candidates, self.allow):
            return
        if host_opened and not _within(candidates, _METADATA):
            return
        closed = _within(candidates, self.deny)
        if closed is not None:
            raise BlockedDestination(f"address {address} is closed ({closed})")
        if not judged.is_global:
            raise BlockedDestination(
                f"address {address} is not open: private, loopback and link-local addresses "
                "are closed unless an operator opens them"
            )

    def check_url(self, url: str) -> tuple[str, str, int]:
        """The URL's scheme, host and port; a literal address is checked now."""
        try:
            parts = urlsplit(url)
            host = parts.hostname
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise BlockedDestination(f"not a valid URL ({exc})") from None
        if parts.scheme not in ("http", "https") or not host:
            raise BlockedDestination("must be an absolute http(s) URL")
        literal = literal_address(host)
        if literal is not None:
            self.check_address(literal)
        return parts.scheme, host, port

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        """Resolve `host` and check every address it has; all of them, in the resolver's
        order, to dial one after another. A name that does not resolve (now) is
        UnresolvedHost: DNS failures pass, so it is retried, not blocked."""
        literal = literal_address(host)
        if literal is not None:
            self.check_address(literal)
            return [literal]
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise UnresolvedHost(f"host {host!r} does not resolve ({exc})") from None
        addresses = list(
            dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos)
        )
        if not addresses:
            raise UnresolvedHost(f"host {host!r} does not resolve")
        host_opened = self.openings.opens_host(host)
        for address in addresses:  # every one: the resolver may rotate them
            self.check_address(address, host_opened=host_opened)
        return addresses


def require_allowed(policy: DestinationPolicy, url: str | None, *, param: str) -> None:
    """The submit-time check as a 400 naming the field; the dialled address is checked later."""
    if url is None:
        return
    try:
        policy.check_url(url)
    except BlockedDestination as exc:
        raise InvalidRequest(
            f"{param}: {exc}; webhooks go to http(s) destinations that are public or that an "
            "operator opened for the company or the team",
            param=param,
        ) from None


def literal_address(host: str) -> IPAddress | None:
    """An IP literal in any form the C resolver accepts (127.1, 0x7f.0.0.1, 2130706433)."""
    try:
        return ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):
        return None
