"""One signed POST to a webhook endpoint, behind the SSRF guard (docs/domain.md, "Webhooks").

The guard resolves the host ONCE, refuses the address if it is not a public unicast one, and
then connects to that very address (urllib3's connection pool opened on the IP, with the
``Host`` header and, for https, the TLS SNI and certificate check of the hostname): a DNS
answer that changes between the check and the connection (rebinding) cannot move the request
to an internal address. Redirects are not followed (a 3xx is a failed attempt) and plain http
is refused. ``allow_private`` (``WEBHOOK_ALLOW_PRIVATE_TARGETS``, tests and local use) lifts
both the address check and the https requirement, nothing else.

Why urllib3: it is already here (requests depends on it), well kept, and its connection pool
takes the address to connect to apart from the name to present (``server_hostname`` for SNI,
``assert_hostname`` for the certificate), which is exactly the pinning above; httpx would need
a custom transport for the same.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

import urllib3
from standardwebhooks import Webhook

from ...errors import ValidationError

TIMEOUT_S = 10  # a 2xx within this is delivered
BODY_KEPT = 1024  # bytes of the response body kept with the attempt

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]

# Cloud metadata services, refused by name even where a range check would already catch them.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.169.123",  # AWS time sync
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud (classic)
    )
)


def _nat64(a: ipaddress.IPv6Address) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(int(a) & 0xFFFFFFFF)


def _6to4(a: ipaddress.IPv6Address) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address((int(a) >> 80) & 0xFFFFFFFF)


# IPv6 prefixes that carry an IPv4 address a router may reach: that address is judged.
_EMBEDDING = (
    (ipaddress.ip_network("64:ff9b::/96"), _nat64),
    (ipaddress.ip_network("2002::/16"), _6to4),
)


class Refused(Exception):
    """The target is not allowed (SSRF guard) or not a URL we send to; never retried usefully,
    but recorded as the attempt's error like any other failure."""


def refusal(address: IPAddress) -> str | None:
    """Why this address may not be a webhook target, or None if it may."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return refusal(address.ipv4_mapped)
        for network, inner in _EMBEDDING:
            if address in network:
                return refusal(inner(address))
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    for name in ("loopback", "link_local", "multicast", "unspecified", "private", "reserved"):
        if getattr(address, f"is_{name}"):
            return f"a {name.replace('_', '-')} address"
    if isinstance(address, ipaddress.IPv4Address) and address in _CGNAT:
        return "a shared (CGNAT) address"
    if not address.is_global:
        return "not a public address"
    return None


_CGNAT = ipaddress.ip_network("100.64.0.0/10")


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # the name as written (Host header, SNI, certificate)
    port: int
    path: str  # path and query


def parse_url(url: str, *, allow_private: bool, field: str = "url") -> Target:
    """The URL's parts, or a ValidationError naming ``field``: an absolute http(s) URL without
    credentials; https only unless ``allow_private``; a literal IP address must pass the guard
    (a name is checked when it is resolved, at every delivery)."""
    if not isinstance(url, str) or not url or len(url) > 2000 or any(c.isspace() for c in url):
        raise ValidationError("Give an absolute https URL (at most 2000 characters).", field=field)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValidationError(f"Not a valid URL: {exc}.", field=field) from exc
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValidationError("Give an absolute https URL.", field=field)
    if parts.scheme == "http" and not allow_private:
        raise ValidationError("Plain http is refused: use an https URL.", field=field)
    if parts.username or parts.password:
        raise ValidationError("A webhook URL may not carry a user or password.", field=field)
    if parts.fragment:
        raise ValidationError("A webhook URL may not have a #fragment.", field=field)
    host = parts.hostname
    if not allow_private:
        try:
            literal: IPAddress | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None and (why := refusal(literal)):
            raise ValidationError(f"{host} is {why}: refused as a webhook target.", field=field)
        if host == "localhost" or host.endswith(".localhost"):
            raise ValidationError(f"{host} is a loopback name: refused.", field=field)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(parts.scheme, host, port or (443 if parts.scheme == "https" else 80), path)


def pinned_address(target: Target, *, allow_private: bool, resolver: Resolver) -> str:
    """Resolve once; every answer must pass the guard (an attacker's name may mix a public and
    a private address); the first one is the address connected to."""
    try:
        answers = resolver(target.host, target.port)
    except OSError as exc:
        raise Refused(f"cannot resolve {target.host}: {exc}") from exc
    if not answers:
        raise Refused(f"{target.host} has no address")
    if not allow_private:
        for answer in answers:
            why = refusal(ipaddress.ip_address(answer.split("%")[0]))
            if why:
                raise Refused(f"{target.host} resolves to {answer}, {why}")
    return answers[0]


@dataclass(frozen=True)
class Result:
    status_code: int | None
    body: str | None  # the first KiB, decoded leniently
    error: str | None
    duration_ms: int

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300 and not self.error


def signature(secrets: list[str], msg_id: str, timestamp: datetime, body: str) -> str:
    """The `webhook-signature` header: one ``v1,...`` per secret, space separated."""
    return " ".join(Webhook(s).sign(msg_id, timestamp, body) for s in secrets)


def signed_headers(
    secrets: list[str], msg_id: str, body: str, *, now: float | None = None
) -> dict[str, str]:
    # The wall clock, not the services' clock: receivers check the timestamp against theirs.
    stamp = datetime.fromtimestamp(int(time.time() if now is None else now), UTC)
    return {
        "content-type": "application/json",
        "user-agent": "webapp-webhooks/1",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(stamp.timestamp())),
        "webhook-signature": signature(secrets, msg_id, stamp, body),
    }


class Sender:
    """Sends with a pool per pinned (scheme, address, port, host), so that a busy endpoint's
    connections are kept alive; the address was checked when resolved for this very send."""

    def __init__(
        self,
        *,
        allow_private: bool,
        resolver: Resolver = system_resolver,
        ca_certs: str | None = None,  # tests: a private CA; None: the system's
    ) -> None:
        self.allow_private = allow_private
        self.resolver = resolver
        self.ca_certs = ca_certs
        self._pools: dict[tuple[str, str, int, str], urllib3.HTTPConnectionPool] = {}
        self._lock = threading.Lock()

    def _pool(self, target: Target, address: str) -> urllib3.HTTPConnectionPool:
        key = (target.scheme, address, target.port, target.host)
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                if len(self._pools) > 256:
                    for old in self._pools.values():
                        old.close()
                    self._pools.clear()
                timeout = urllib3.Timeout(total=TIMEOUT_S)
                if target.scheme == "https":
                    pool = urllib3.HTTPSConnectionPool(
                        address,
                        target.port,
                        timeout=timeout,
                        maxsize=8,
                        retries=False,
                        server_hostname=target.host,
                        assert_hostname=target.host,
                        cert_reqs="CERT_REQUIRED",
                        ca_certs=self.ca_certs,
                    )
                else:
                    pool = urllib3.HTTPConnectionPool(
                        address, target.port, timeout=timeout, maxsize=8, retries=False
                    )
                self._pools[key] = pool
            return pool

    def post(self, url: str, body: str, headers: dict[str, str]) -> Result:
        started = time.monotonic()

        def done(code: int | None, text: str | None, error: str | None) -> Result:
            elapsed = time.monotonic() - started
            if error is None and elapsed > TIMEOUT_S:
                error = f"answered after {elapsed:.1f} s (more than {TIMEOUT_S:.0f} s)"
            return Result(code, text, error, int(elapsed * 1000))

        try:
            target = parse_url(url, allow_private=self.allow_private)
            address = pinned_address(
                target, allow_private=self.allow_private, resolver=self.resolver
            )
        except (ValidationError, Refused) as exc:
            return done(None, None, f"refused: {getattr(exc, 'message', None) or exc}")
        default_port = 443 if target.scheme == "https" else 80
        host = target.host if ":" not in target.host else f"[{target.host}]"
        host_header = host if target.port == default_port else f"{host}:{target.port}"
        try:
            response = self._pool(target, address).urlopen(
                "POST",
                target.path,
                body=body.encode(),
                headers={**headers, "host": host_header},
                redirect=False,
                retries=False,
                preload_content=False,
                assert_same_host=False,
            )
        except urllib3.exceptions.HTTPError as exc:
            return done(None, None, f"{type(exc).__name__}: {exc}"[:500])
        try:
            kept = response.read(BODY_KEPT)
            left = response.length_remaining
            if left is not None and left <= 65536:
                response.drain_conn()  # a small rest: read it, keep the connection
            else:
                response.close()  # a large or unbounded rest is not read: drop the connection
        except urllib3.exceptions.HTTPError as exc:
            return done(response.status, None, f"reading the answer: {exc}"[:500])
        finally:
            response.release_conn()
        return done(response.status, kept.decode("utf-8", "replace"), None)

    def close(self) -> None:
        with self._lock:
            for pool in self._pools.values():
                pool.close()
            self._pools.clear()
