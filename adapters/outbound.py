"""Where the broker may send a request whose URL a caller gave: an `image_url` it fetches or passes on
to a provider, and a team's `webhook_url`. One policy, used by all of them.

The rule: https only, to a host whose every address is public — never private, loopback, link-local
(which holds the cloud metadata address), multicast, reserved or unspecified. It is checked three
times: `check_url` at submit, without DNS (a literal address, `localhost` or `http:` is the caller's
mistake, answered at once); `check` before each request, after resolving the name; and on connect,
by the sessions `open_session` makes, whose resolver and socket factory refuse the same addresses —
so a DNS answer that changes between the check and the connect reaches nothing inside.

`BROKER_OUTBOUND_ALLOW` (hosts and CIDRs, comma-separated) admits internal image hosts and webhook
receivers for the deployments that need them; an admitted target may also use plain `http:`. Cloud
metadata addresses are never admitted, also not through an allow-listed name that resolves to one
(`check` and the session's resolver resolve allow-listed names too, for that alone). Provider base
URLs and the output URLs in a provider's own answers are the operator's configuration, not a
caller's, and do not go through this policy.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[IpAddress]]]

# The instance metadata services of the big clouds: never reachable, whatever the allow-list says.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",
        "169.254.170.2",
        "fd00:ec2::254",
        "fd00:ec2::23",
        "100.100.100.200",
        "192.0.0.192",
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class OutboundRefused(Exception):
    """A URL the policy will not send a request to; the message says why, for the caller."""


async def resolve_host(host: str, port: int) -> list[IpAddress]:
    """Every address `host` resolves to (the default resolver)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [ipaddress.ip_address(info[4][0]) for info in infos]


def _embedded_ipv4(address: IpAddress) -> IpAddress:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, Teredo, NAT64), else the address."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address.teredo is not None:
            return address.teredo[1]
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def is_metadata(address: IpAddress) -> bool:
    """True for a cloud metadata address, also inside an IPv6 address that carries an IPv4 one."""
    return address in METADATA_ADDRESSES or _embedded_ipv4(address) in METADATA_ADDRESSES


def address_kind(address: IpAddress) -> str | None:
    """Why a request may not go to `address` ("loopback", "private", ...), or None if it is public."""
    address = _embedded_ipv4(address)
    if address in METADATA_ADDRESSES:
        return "cloud metadata"
    checks = (
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("unspecified", address.is_unspecified),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
        ("non-public", not address.is_global),
    )
    return next((kind for kind, hit in checks if hit), None)


def literal_address(host: str) -> IpAddress | None:
    """The address a URL's host names without DNS, also in the legacy numeric forms (`0x7f000001`,
    `2130706433`, `127.1`) that the system resolver turns into one; None for a name."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


_HTTPS_ONLY = "must use https (plain http only to hosts and networks in BROKER_OUTBOUND_ALLOW)"


def _host(url: URL) -> str:
    return (url.host or "").lower().rstrip(".")


def _is_localhost(host: str) -> bool:
    return host == "localhost" or host.endswith(".localhost")


@dataclass(frozen=True, slots=True)
class OutboundPolicy:
    """Which caller-given URLs the broker may request. The default admits public https hosts only."""

    allowed_hosts: frozenset[str] = frozenset()
    allowed_networks: tuple[IpNetwork, ...] = ()
    resolver: Resolver = field(default=resolve_host, compare=False)

    @classmethod
    def parse(cls, entries: str | Iterable[str], resolver: Resolver = resolve_host) -> OutboundPolicy:
        """A policy from allow-list entries (`images.internal`, `10.20.0.0/16`, `127.0.0.1`);
        a comma-separated string works too. ValueError names a bad entry."""
        items = entries.split(",") if isinstance(entries, str) else list(entries)
        hosts: set[str] = set()
        networks: list[IpNetwork] = []
        for item in (i.strip() for i in items):
            if not item:
                continue
            if "/" in item or literal_address(item) is not None:
                try:
                    networks.append(ipaddress.ip_network(item.strip("[]"), strict=False))
                except ValueError:
                    raise ValueError(f"{item!r} is neither a host name nor an address or CIDR") from None
            elif any(c in item for c in ":@ ?#"):
                raise ValueError(f"{item!r} is not a host name (give the host alone, without scheme or port)")
            else:
                hosts.add(item.lower().rstrip("."))
        return cls(frozenset(hosts), tuple(networks), resolver)

    @property
    def allow_list(self) -> list[str]:
        """The allow-list entries, as a setting would give them."""
        return sorted(self.allowed_hosts) + [str(n) for n in self.allowed_networks]

    def address_allowed(self, address: IpAddress) -> bool:
        """True if a request may go to `address`: public, or in an allowed network (metadata: never)."""
        if is_metadata(address):
            return False
        return address_kind(address) is None or any(address in n for n in self.allowed_networks)

    def host_allowed(self, host: str) -> bool:
        """True if `host` (lower case, no trailing dot) is named in the allow-list."""
        return host in self.allowed_hosts

    def _in_networks(self, address: IpAddress) -> bool:
        return self.address_allowed(address) and any(address in n for n in self.allowed_networks)

    def check_url(self, url: str) -> URL:
        """The checks that need no DNS: scheme, credentials, a literal or local host. The parsed URL,
        or `OutboundRefused` saying why."""
        try:
            parsed = URL(url)
        except (ValueError, TypeError):
            raise OutboundRefused("is not a valid URL") from None
        host = _host(parsed)
        if parsed.scheme not in ("https", "http") or not host:
            raise OutboundRefused("must be an https:// URL with a host")
        if parsed.user is not None or parsed.password is not None:
            raise OutboundRefused("must not carry a user name or password")
        if self.host_allowed(host):
            return parsed
        address = literal_address(host)
        if address is not None:
            if not self.address_allowed(address):
                raise OutboundRefused(f"points at a {address_kind(address)} address ({address})")
            if isinstance(address, ipaddress.IPv4Address) and str(address) != host:
                raise OutboundRefused(f"names the address {address} in a non-standard form")
        elif _is_localhost(host):
            raise OutboundRefused("points at a loopback address (localhost)")
        # Plain http only to what the allow-list names; for a name, that is known after DNS (`check`).
        if parsed.scheme == "http":
            admitted = self._in_networks(address) if address is not None else bool(self.allowed_networks)
            if not admitted:
                raise OutboundRefused(_HTTPS_ONLY)
        return parsed

    async def check(self, url: str) -> URL:
        """`check_url`, then resolve the host and check every address it has. The parsed URL."""
        parsed = self.check_url(url)
        host = _host(parsed)
        if literal_address(host) is not None:
            return parsed
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        if self.host_allowed(host):  # any address but a metadata service's
            await self._check_allowed_name(host, port)
            return parsed
        try:
            addresses = await self.resolver(host, port)
        except OSError:
            raise OutboundRefused(f"host {host} cannot be resolved") from None
        if not addresses:
            raise OutboundRefused(f"host {host} has no address")
        for address in addresses:
            if not self.address_allowed(address):
                raise OutboundRefused(f"host {host} resolves to a {address_kind(address)} address")
        if parsed.scheme == "http" and not all(self._in_networks(a) for a in addresses):
            raise OutboundRefused(_HTTPS_ONLY)
        return parsed

    async def _check_allowed_name(self, host: str, port: int) -> None:
        """An allow-listed name may lead anywhere but to a metadata service. One this broker cannot
        resolve is admitted as before (a provider fetches it from its own network; a session of
        `open_session` resolves it again, and refuses a metadata address, on connect)."""
        try:
            addresses = await self.resolver(host, port)
        except OSError:
            return
        if any(is_metadata(a) for a in addresses):
            raise OutboundRefused(f"host {host} resolves to a cloud metadata address")

    def open_session(self, **kwargs: Any) -> aiohttp.ClientSession:
        """A client session that refuses, on connect, every address this policy refuses."""
        resolver = _GuardedResolver(self)
        connector = aiohttp.TCPConnector(resolver=resolver, socket_factory=resolver.socket)
        return aiohttp.ClientSession(connector=connector, **kwargs)


class _GuardedResolver(AbstractResolver):
    """Resolves through the policy's resolver and refuses what the policy refuses; its `socket` is the
    connector's socket factory, the last check before a connect, which also sees literal addresses."""

    def __init__(self, policy: OutboundPolicy) -> None:
        self._policy = policy
        self._admitted: set[IpAddress] = set()  # addresses of allow-listed host names

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[ResolveResult]:
        name = host.lower().rstrip(".")
        try:
            addresses = await self._policy.resolver(name, port)
        except OSError as exc:
            raise OSError(f"cannot resolve {host}: {exc}") from None
        if self._policy.host_allowed(name):
            if any(is_metadata(a) for a in addresses):  # never, even for an allow-listed name
                raise OSError(f"{host} resolves to a cloud metadata address; refused")
            self._admitted.update(addresses)
        else:
            for address in addresses:
                if not self._policy.address_allowed(address):
                    raise OSError(f"{host} resolves to a {address_kind(address)} address; refused")
        return [_result(host, address, port) for address in addresses]

    def socket(self, addr_info: Any) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        address = ipaddress.ip_address(sockaddr[0])
        admitted = address in self._admitted and not is_metadata(address)
        if not (self._policy.address_allowed(address) or admitted):
            raise OSError(f"connecting to {address} ({address_kind(address)}) is refused")
        return socket.socket(family=family, type=type_, proto=proto)

    async def close(self) -> None:
        self._admitted.clear()


def _result(host: str, address: IpAddress, port: int) -> ResolveResult:
    family = socket.AF_INET6 if isinstance(address, ipaddress.IPv6Address) else socket.AF_INET
    return {
        "hostname": host,
        "host": str(address),
        "port": port,
        "family": family,
        "proto": 0,
        "flags": socket.AI_NUMERICHOST,
    }
