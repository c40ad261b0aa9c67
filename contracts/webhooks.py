"""What the API and the webhook service share about webhooks: delivery statuses, the resend
message's header and routing, and the rule for which endpoint URLs may receive webhooks.

An endpoint must not make the webhook service call into our own network (SSRF): a URL whose host
resolves to a private, loopback, link-local or otherwise non-public address is refused unless
`webhook_allow_private_urls` is set (local development and tests).
"""

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import httpx

from contracts.db.engine import naive_utc
from contracts.domain.text import text_problem
from contracts.topology import RETRY_CLOCK_OFFSET_HEADER, RETRY_DUE_HEADER, webhook_events_queue

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL_LENGTH = 2048
# How long a webhook service keeps a merchant's endpoint (URL, secrets, chaos) for first
# attempts (webhook_service/endpoints.py): a change reaches them within this.
ENDPOINT_CACHE_SECONDS = 2.0
RESOLVE_TIMEOUT_SECONDS = 5.0


class DeliveryStatus(StrEnum):
    PENDING = "PENDING"  # recorded, not attempted yet (or a resend / replay is queued)
    RETRYING = "RETRYING"  # an attempt failed; the next one waits in a retry queue
    DELIVERED = "DELIVERED"  # the endpoint answered 2xx
    PARKED = "PARKED"  # retries exhausted (or no endpoint configured): waits for a resend


def resend_routing_key(*, in_bulk: bool) -> str:
    """A resend is the stored event sent again straight to the webhook queue of its payout's lane
    (default exchange, routing key = queue name; the name does not depend on the number of
    retry tiers). A bulk payout's copy sent to the single payouts' queue overtook its own
    backlog, and its retries stayed in that lane (lanes review)."""
    return webhook_events_queue(retry_tiers=1, in_bulk=in_bulk).name


# Which resend a message carries out: the delivery's generation after the resend incremented
# it. A delivery that succeeded at this generation or later already honoured the resend, so a
# duplicate of its message is not sent again. A counter, not a time: the API and the webhook
# service run on different hosts, whose clocks disagree.
RESEND_GENERATION_HEADER = "x-webhook-resend-generation"


def _header_count(raw: object) -> int | None:
    """A header's non-negative whole number (None: absent, or anything else)."""
    return raw if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0 else None


def resend_generation(raw: object) -> int:
    """The generation a message asks to deliver: 0 without the header (first deliveries)."""
    return _header_count(raw) or 0


def resend_generation_headers(generation: int) -> dict[str, int]:
    """What a message carrying out `generation` says of it: nothing for a first delivery (0)."""
    return {RESEND_GENERATION_HEADER: generation} if generation else {}


def retry_due_headers(due_at: datetime, *, clock_offset: int | None) -> dict[str, str | int]:
    """The headers of a waiting retry: when it is due on the merchant's sandbox clock, exactly as
    the delivery row records it (naive UTC, microseconds), and the clock's offset its wait was
    measured under (a copy that finds the offset grown since knows that the clock, not real
    time, made it due). A copy whose due time the delivery no longer records is superseded: an
    advance of the clock sent it on already, or a resend did."""
    headers: dict[str, str | int] = {RETRY_DUE_HEADER: due_at.isoformat(timespec="microseconds")}
    if clock_offset is not None:
        headers[RETRY_CLOCK_OFFSET_HEADER] = clock_offset
    return headers


def retry_clock_offset(raw: object) -> int | None:
    """The clock offset a waiting retry's header carries (None: none, or unreadable)."""
    return _header_count(raw)


def retry_due(raw: object) -> datetime | None:
    """The due time a message's header carries (None: not a waiting retry, or unreadable)."""
    if not isinstance(raw, str):
        return None
    try:
        return naive_utc(datetime.fromisoformat(raw))
    except ValueError:  # not a time, or none UTC can hold
        return None


class UnsafeDestination(ValueError):
    """The endpoint's host resolves to an address webhooks must not be sent to."""


MAX_HOST_NAME_LENGTH = 253  # RFC 1035, without the root's trailing dot


def endpoint_url_problem(url: str) -> str | None:
    """Why `url` cannot be a webhook endpoint (syntax only), or None."""
    if len(url) > MAX_URL_LENGTH:
        return f"must be at most {MAX_URL_LENGTH} characters"
    if any(char.isspace() or ord(char) < 32 for char in url):
        return "must not contain whitespace or control characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "is not a valid URL"
    if parts.scheme not in ("http", "https"):
        return "must be an http:// or https:// URL"
    if not parts.hostname:
        return "must name a host"
    if parts.username is not None or parts.password is not None:
        return "must not carry credentials (user:password@)"
    if port == 0:
        return "must not use port 0"
    try:
        host, _ = sender_host(url)
    except httpx.InvalidURL as exc:  # the sender's parse: e.g. 010.8.8.8, or a name IDNA refuses
        return f"is not a valid URL ({exc})"
    except UnicodeEncodeError:  # a lone surrogate: a byte not UTF-8, from a command line
        return "is not a valid URL (not UTF-8 text)"
    if (problem := text_problem(url)) is not None:  # a C1 control, U+202E: as the API's fields
        return problem
    return _host_name_problem(host)


def _host_name_problem(host: str) -> str | None:
    """A name no resolver looks up: judged with the syntax, as with private URLs allowed (test
    mode) no lookup judges it, and such a URL was taken and every webhook to it failed. `host`
    is ASCII (httpx's IDNA 2008 form); Python's own IDNA codec is IDNA 2003, which refuses
    names httpx reaches (straße.de, ZWJ and ZWNJ in Sinhala and Persian names)."""
    if ip_literal(host) is not None:
        return None
    labels = host.removesuffix(".").split(".")
    valid = len(".".join(labels)) <= MAX_HOST_NAME_LENGTH and all(
        1 <= len(label) <= 63 and _punycode_reads(label) for label in labels
    )
    if valid:
        return None
    return (
        f"host {host} is not a valid host name (labels of 1 to 63 characters, "
        f"{MAX_HOST_NAME_LENGTH} in all)"
    )


def _punycode_reads(label: str) -> bool:
    """An `xn--` label encodes some text (`xn--` alone encodes none)."""
    if not label.lower().startswith("xn--"):
        return True
    try:
        return bool(label[4:].encode("ascii").decode("punycode"))
    except UnicodeError:
        return False


DEFAULT_PORTS = {"http": 80, "https": 443}


def sender_host(url: str) -> tuple[str, int]:
    """The host and port the webhook sender connects to for `url` (parsed by httpx, as it does:
    an international name in its IDNA 2008 form)."""
    parsed = httpx.URL(url)
    return parsed.raw_host.decode("ascii"), parsed.port or DEFAULT_PORTS[parsed.scheme]


# IPv6 forms that carry an IPv4 address, which a host with NAT64 or a tunnel routes to that
# address: IPv4-compatible, IPv4-translated, NAT64 (well-known and local-use) and 6to4. Python's
# is_global calls several of them public, so `::7f00:1` would reach 127.0.0.1. Never a webhook's.
IPV4_CARRIERS = tuple(
    ipaddress.IPv6Network(network)
    for network in ("::/96", "::ffff:0:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48", "2002::/16")
)

# Ranges the address tables of Pythons without the CVE-2024-4032 fix (3.11.7 among them) call
# global: IPv6 site-local (deprecated, routed privately where still used) and the IETF's
# protocol assignments; and ranges reserved since: IPv6 documentation (RFC 9637), SRv6 segment
# ids (RFC 9602), the deprecated 6to4 relay anycast (RFC 7526). None is a merchant's server.
NOT_GLOBAL = tuple(
    ipaddress.ip_network(network)
    for network in ("fec0::/10", "192.0.0.0/24", "3fff::/20", "5f00::/16", "192.88.99.0/24")
)


def is_public_address(address: IPAddress) -> bool:
    """True for globally routable unicast addresses only."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        elif any(address in network for network in IPV4_CARRIERS):
            return False
    if any(address in network for network in NOT_GLOBAL):
        return False
    return address.is_global and not address.is_multicast


Resolve = Callable[[str, int], Awaitable[list[IPAddress]]]
AddressInfo = tuple[Any, ...]  # one entry of socket.getaddrinfo's answer


def ip_literal(host: str) -> IPAddress | None:
    """The address a host that is an IP literal names (no lookup needed), else None."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def addresses_of(infos: Sequence[AddressInfo]) -> list[IPAddress]:
    """The distinct addresses of getaddrinfo's answer, in its order."""
    addresses: list[IPAddress] = []
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])  # drop an IPv6 zone
        if address not in addresses:
            addresses.append(address)
    return addresses


async def public_addresses(
    host: str, port: int, *, allow_private: bool, resolve: Resolve
) -> list[IPAddress]:
    """The addresses to connect to; UnsafeDestination when any of them is not public.

    Every address is checked, not only the first: a host with one public and one private
    record could otherwise be steered to the private one.
    """
    # A name that does not resolve and one that resolves to a private address are refused in
    # the same words, and which addresses is not said: the answers mapped our network's names
    # (`mysql`, `rabbitmq` in compose) for any merchant (SSRF review).
    literal = ip_literal(host)  # itself: no lookup
    verb = "is not" if literal is not None else "does not resolve to"
    not_public = f"host {host} {verb} a public address"
    unresolved = f"host {host} does not resolve" if allow_private else not_public
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_SECONDS):
            addresses = [literal] if literal is not None else await resolve(host, port)
    except UnicodeError as exc:  # IDNA: an empty label, or one over 63 characters
        raise UnsafeDestination(f"host {host} is not a valid host name") from exc
    except (OSError, TimeoutError) as exc:
        raise UnsafeDestination(unresolved) from exc
    if not addresses:
        raise UnsafeDestination(unresolved)
    if not allow_private and not all(is_public_address(address) for address in addresses):
        raise UnsafeDestination(not_public)
    return addresses


async def endpoint_destination_problem(
    url: str, *, allow_private: bool, resolve: Resolve
) -> str | None:
    """Why webhooks cannot be sent to `url` (syntax, then where it resolves), or None."""
    problem = endpoint_url_problem(url)
    if problem or allow_private:
        return problem
    try:
        await public_addresses(*sender_host(url), allow_private=False, resolve=resolve)
    except UnsafeDestination as exc:
        return str(exc)
    return None
