"""Where the gateway may send requests (webhooks, archive downloads): http(s) only, and never
to addresses that reach the gateway's own machine or the cloud's metadata service.

Checked twice: when a callback URL is submitted (its form, and its address when it is a
literal one) and at connect time against the address actually dialled: the host name is
resolved once, every address it resolves to is checked, and the connection goes to that
checked address (the name only travels in the Host header and TLS SNI), so DNS rebinding
cannot swap in another address between check and connect.

Denied by default: loopback, link-local (including 169.254.169.254 metadata),
unspecified, multicast, broadcast and other reserved ranges. Private ranges are allowed:
callers are internal services. IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible, 6to4 and
NAT64 (64:ff9b::/96) forms are judged by the IPv4 address they carry. Operators add
ranges with QGW_WEBHOOK_DENY_NETWORKS and open them with QGW_WEBHOOK_ALLOW_NETWORKS (the
allow list wins).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from service.errors import InvalidRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
_DENIED_BY_DEFAULT: tuple[Network, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",  # "this network", includes the unspecified address
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local, cloud metadata
        "100.100.100.200/32",  # Alibaba Cloud metadata (outside link-local)
        "192.0.0.0/24",  # IETF protocol assignments
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, broadcast
        "::/128",  # unspecified
        "::1/128",  # loopback
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",  # multicast
        "fd00:ec2::254/128",  # AWS metadata over IPv6
    )
)


class UnresolvedHost(Exception):
    """The destination's name does not resolve: DNS may be down or the record not there
    yet, so the attempt fails and is retried on schedule."""


class BlockedDestination(Exception):
    """The URL may not receive webhooks; the message says why, naming no secret."""


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


@dataclass(frozen=True)
class DestinationPolicy:
    allow: tuple[Network, ...] = ()
    deny: tuple[Network, ...] = ()

    @classmethod
    def from_settings(cls, allow: str, deny: str) -> DestinationPolicy:
        return cls(allow=parse_networks(allow), deny=parse_networks(deny))

    def check_address(self, address: IPAddress) -> None:
        judged = embedded_ipv4(address)
        candidates = {address, judged}
        if any(a in net for a in candidates for net in self.allow if a.version == net.version):
            return
        for net in (*_DENIED_BY_DEFAULT, *self.deny):
            if any(a.version == net.version and a in net for a in candidates):
                raise BlockedDestination(f"address {address} is not allowed ({net})")
        if judged.is_multicast or judged.is_unspecified or judged.is_loopback:
            raise BlockedDestination(f"address {address} is not allowed")

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
        for address in addresses:  # every one: the resolver may rotate them
            self.check_address(address)
        return addresses


def require_allowed(policy: DestinationPolicy, url: str | None, *, param: str) -> None:
    """The submit-time check as a 400 naming the field; the dialled address is checked later."""
    if url is None:
        return
    try:
        policy.check_url(url)
    except BlockedDestination as exc:
        raise InvalidRequest(
            f"{param}: {exc}; webhooks go to http(s) services on the network, never to "
            "loopback, link-local or metadata addresses",
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
