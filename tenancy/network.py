"""Outbound calls to addresses a tenant gives us (providers, alert webhooks) must never reach
inside the platform's own networks: loopback, private, link-local (cloud metadata),
carrier-grade NAT, multicast, reserved or unspecified addresses.

A URL is checked when it is saved and again at every connection: the host is resolved
once, every address it resolves to is checked, and the connection goes to a checked
address, so a name that changes between the two (DNS rebinding) cannot slip through.
An operator may let some internal hosts through (a provider on their own network, the
tests' and benchmarks' local backends) with SWITCHBOARD_OUTBOUND_ALLOWED_HOSTS: host
names, addresses or networks. Nothing else, DEBUG included, opens the door.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class RefusedAddress(Exception):
    """The host is, or resolves to, an address outbound calls may not reach."""


class Unresolvable(Exception):
    """The host does not resolve (now)."""


@dataclass(frozen=True)
class OutboundPolicy:
    """Which internal destinations the operator allows; every public address is allowed."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> OutboundPolicy:
        """Entries are host names (`provider.corp.internal`), addresses (`127.0.0.1`) or
        networks (`10.20.0.0/16`). Raises ValueError naming an entry that is none."""
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for raw in entries:
            entry = raw.strip().lower().strip("[]")
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            if not _looks_like_host(entry):
                raise ValueError(f"{raw!r} is not a host name, an address or a network")
            hosts.add(entry.rstrip("."))
        return cls(hosts=frozenset(hosts), networks=tuple(networks))

    def allows(self, host: str, address: IPAddress) -> bool:
        if address.is_global and not (address.is_multicast or address.is_reserved):
            return True
        return host.lower().rstrip(".") in self.hosts or any(address in network for network in self.networks)


def _looks_like_host(entry: str) -> bool:
    labels = entry.rstrip(".").split(".")
    return all(label and len(label) <= 63 and label.replace("-", "").isalnum() for label in labels)


def _address(text: str) -> IPAddress:
    address = ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    return address


def literal_address(host: str) -> IPAddress | None:
    try:
        return _address(host.strip("[]"))
    except ValueError:
        return None


def checked_addresses(host: str, resolved: Iterable[str], policy: OutboundPolicy) -> list[str]:
    """The resolved addresses, if every one of them may be reached; RefusedAddress otherwise
    (one internal address among public ones is refused too: a resolver may pick it)."""
    addresses = [_address(text) for text in dict.fromkeys(resolved)]
    if not addresses:
        raise Unresolvable(f"{host} does not resolve")
    refused = [address for address in addresses if not policy.allows(host, address)]
    if refused:
        raise RefusedAddress(f"{host} is, or resolves to, an address inside a private network ({refused[0]})")
    return [str(address) for address in addresses]


def resolve_checked(host: str, port: int, policy: OutboundPolicy) -> list[str]:
    """Resolves (blocking) and checks; for checks when a URL is saved."""
    literal = literal_address(host)
    if literal is not None:
        return checked_addresses(host, [str(literal)], policy)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        raise Unresolvable(f"{host} does not resolve") from error
    return checked_addresses(host, [str(info[4][0]) for info in infos], policy)


async def resolve_checked_async(host: str, port: int, policy: OutboundPolicy) -> list[str]:
    """Resolves (off the event loop) and checks; for the moment of connecting."""
    literal = literal_address(host)
    if literal is not None:
        return checked_addresses(host, [str(literal)], policy)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        raise Unresolvable(f"{host} does not resolve") from error
    return checked_addresses(host, [str(info[4][0]) for info in infos], policy)


def refusal(url: str, policy: OutboundPolicy) -> str | None:
    """Why a tenant's URL may not be saved, in words for them; None when it may. A host that
    does not resolve now is accepted: it is checked again at every connection."""
    if any(ord(char) < 33 or ord(char) == 127 for char in url):
        return "The URL cannot contain spaces, line breaks or other control characters."
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "Give an http(s) URL, e.g. https://api.example.com/v1."
    if parts.username is not None or parts.password is not None:
        return "Leave credentials out of the URL."
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return "The URL's port is not a valid port number."
    try:
        resolve_checked(parts.hostname, port, policy)
    except RefusedAddress:
        return (
            "The URL must be on the public internet: loopback, private, link-local and other internal addresses are refused "
            "(an operator can allow a host with SWITCHBOARD_OUTBOUND_ALLOWED_HOSTS)."
        )
    except Unresolvable:
        return None
    return None


def pinned(url: str, address: str) -> tuple[str, str]:
    """The URL with its host replaced by a checked address, and the Host header the server
    expects; TLS still verifies the certificate against the original host name."""
    parts = urlsplit(url)
    host = f"[{address}]" if ":" in address else address
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc)), parts.netloc.rpartition("@")[2]


def post_json(url: str, payload: object, policy: OutboundPolicy, *, timeout: float) -> None:
    """POSTs JSON to a tenant's URL (blocking), connecting only to a checked address and
    following no redirect. Raises RefusedAddress, Unresolvable or httpx.HTTPError (also
    for an answer that is not 2xx)."""
    parts = urlsplit(url)
    if not parts.hostname:
        raise Unresolvable("the URL has no host")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target, host = pinned(url, resolve_checked(parts.hostname, port, policy)[0])
    extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else None
    with httpx.Client(timeout=timeout, follow_redirects=False) as client:
        client.post(target, json=payload, headers={"host": host}, extensions=extensions).raise_for_status()
