"""Outbound URLs a tenant gives us (providers, alert webhooks) must not reach inside the
platform's own networks."""

from __future__ import annotations

import ipaddress
import socket


def is_private_host(host: str) -> bool:
    """Whether the host is, or resolves to, an address inside the platform's own networks
    (a URL there could reach replicas or internal services)."""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False  # unresolvable now; the connection will fail instead
    return any(not ipaddress.ip_address(str(address).split("%")[0]).is_global for address in addresses)
