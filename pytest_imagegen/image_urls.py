"""Image URLs (``data[].url``) are fetched only from where an image may come from.

An endpoint's answer decides which URL gets fetched, so a hostile or broken relay could make
the test run request its cloud metadata service (169.254.169.254) or an internal host. The
rules, checked on the address actually connected to (a name is resolved, checked, and the
connection made to the checked address, so DNS cannot answer differently in between):

* only ``http`` and ``https``;
* link-local, private and cloud-metadata addresses are refused unless the endpoint itself is
  on that kind of network (a loopback endpoint may serve loopback URLs, a relay on 10.0.0.5
  may serve from 10.0.0.7); loopback URLs need a loopback endpoint; metadata addresses and
  unspecified, multicast or reserved ones are always refused;
* the body may not exceed the profile's largest image, and the download is bounded in time
  like every request (:mod:`pytest_imagegen.bounds`).

A refusal is a :class:`~pytest_imagegen.errors.MalformedResponse` naming the URL (scrubbed)
and the cause; nothing is sent.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from pytest_imagegen.config import is_loopback_host
from pytest_imagegen.errors import MalformedResponse
from pytest_imagegen.redact import Redactor

__all__ = ["ImageURLRefused", "check_url", "connect_guard", "network_of"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Cloud metadata services (AWS/GCP/Azure/OpenStack, AWS ECS and IPv6, Alibaba).
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200")
)
# Carrier-grade NAT space is as internal as RFC 1918 space.
_SHARED = ipaddress.ip_network("100.64.0.0/10")
_REDACT = Redactor.of()


class ImageURLRefused(MalformedResponse):
    """An image URL that is not fetched (wrong scheme, or an address it may not reach)."""


def network_of(address: IPAddress) -> str:
    """The kind of network of ``address``: ``metadata``, ``loopback``, ``link-local``,
    ``private``, ``special`` (unspecified, multicast, reserved) or ``public``."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in METADATA_ADDRESSES:
        return "metadata"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_unspecified or address.is_multicast or address.is_reserved:
        return "special"
    if address.is_private or (isinstance(address, ipaddress.IPv4Address) and address in _SHARED):
        return "private"
    return "public"


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


def endpoint_network(base_url: str) -> str:
    """The kind of network the endpoint is on (a name that is not loopback counts as public
    unless it resolves to an internal address)."""
    host = urlsplit(base_url).hostname or ""
    if is_loopback_host(host):
        return "loopback"
    literal = _literal(host)
    if literal is not None:
        return network_of(literal)
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return "public"
    kinds = {network_of(ipaddress.ip_address(info[4][0])) for info in infos}
    for kind in ("loopback", "link-local", "private"):
        if kind in kinds:
            return kind
    return "public"


def _refusal(address: IPAddress, allowed: str) -> str | None:
    kind = network_of(address)
    if kind == "public" or kind == allowed:
        return None
    if kind == "metadata":
        return f"{address} is a cloud metadata address, never fetched"
    if kind == "special":
        return f"{address} is not an address an image can come from"
    return f"{address} is a {kind} address and the endpoint is not on a {kind} network"


def shown(url: str) -> str:
    """``url`` as a message may quote it: credentials and signatures scrubbed, shortened."""
    text = _REDACT.url(url)
    return text if len(text) <= 160 else text[:157] + "..."


def check_url(url: str, *, base_url: str) -> None:
    """Refuse, without any lookup or packet, what can be refused from the URL alone: a
    scheme other than http(s), and an address literal the endpoint may not send us to."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        raise ImageURLRefused(f"the image URL {shown(url)!r} is not a valid URL") from None
    if parts.scheme.lower() not in ("http", "https") or not host:
        raise ImageURLRefused(
            f"the image URL {shown(url)!r} is not an http(s) URL; nothing was fetched"
        )
    literal = _literal(host)
    if is_loopback_host(host) and literal is None:
        literal = ipaddress.ip_address("127.0.0.1")
    if literal is not None:
        why = _refusal(literal, endpoint_network(base_url))
        if why is not None:
            raise ImageURLRefused(f"the image URL {shown(url)!r} was not fetched: {why}")


def connect_guard(url: str, *, base_url: str) -> Callable[[str, int], str]:
    """A connect hook for :class:`pytest_imagegen.bounds.BoundedBackend`: resolves the host,
    refuses a forbidden address before connecting, and returns the checked address to
    connect to."""
    allowed: list[str] = []

    def guard(host: str, port: int) -> str:
        if not allowed:
            allowed.append(endpoint_network(base_url))
        literal = _literal(host)
        if literal is not None:
            addresses = [literal]
        else:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
        reasons = []
        for address in addresses:
            why = _refusal(address, allowed[0])
            if why is None:
                return str(address)
            reasons.append(why)
        raise ImageURLRefused(
            f"the image URL {shown(url)!r} was not fetched: {'; '.join(dict.fromkeys(reasons))}"
        )

    return guard


def fetch(http: Any, url: str, *, base_url: str, limits: Any) -> bytes:
    """Download an image URL with ``http`` (an httpx2 client, ideally a bounded one) under
    the rules above; :class:`~pytest_imagegen.errors.MalformedResponse` naming the scrubbed
    URL and the cause for anything but an image body within ``limits``."""
    import httpx2

    from pytest_imagegen.bounds import find_cut

    check_url(url, base_url=base_url)
    extensions = {
        "imagegen_connect_guard": connect_guard(url, base_url=base_url),
        "imagegen_limits": limits,
    }
    try:
        response = http.get(url, extensions=extensions)
    except httpx2.HTTPError as exc:
        cause = str(exc) or type(exc).__name__
        raise MalformedResponse(
            f"downloading the image URL {shown(url)!r} failed: {type(exc).__name__}: {cause}"
        ) from None
    if response.status_code != 200:
        raise MalformedResponse(
            f"the image URL {shown(url)!r} answered HTTP {response.status_code} instead of an image"
        )
    content: bytes = response.content
    found = find_cut(content)
    if found is not None:
        raise MalformedResponse(f"the image URL {shown(url)!r}: {found[1].describe()}")
    return content
