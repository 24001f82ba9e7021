"""Fetching a URL a user named, safely: http(s) only, public addresses only, bounded time and bytes.

Standard library only (http.client, ssl, zlib). Every hop of a redirect chain is checked again; the
host is resolved here and the connection goes to the address that was checked (the Host header and
TLS SNI carry the name), so a DNS answer that changes between check and connect cannot reach a
private address. A watchdog closes the socket at the page's wall-clock deadline, so a server that
drips one byte a second, or stalls in its headers, is cut off on time.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

from kb import SourceError, __version__, option

PRODUCT = "kb"
"""The product token: the User-Agent starts with it and robots.txt groups are matched against it."""
DISTRIBUTION = "coursekb"
"""This project's name on PyPI (`kb` there is an unrelated project): where a site owner can read about it."""
USER_AGENT = (
    f"{PRODUCT}/{__version__} ({DISTRIBUTION}, a course-materials indexer; +https://pypi.org/project/{DISTRIBUTION}/)"
)
REDIRECTS = (301, 302, 303, 307, 308)
READ_SIZE = 64 * 1024
NAT64 = ipaddress.ip_network("64:ff9b::/96")


@dataclass(frozen=True)
class NetworkOptions:
    """Where the fetchers may connect: shared by the web and yt-dlp fetchers, declared once here."""

    allow_private: bool = option(
        False, "Let URLs reach loopback and private network addresses (refused by default).", flag="--allow-private"
    )


class FetchError(SourceError):
    """A URL could not be fetched; the message is one sentence for the ingest report."""


class Refused(FetchError):
    """kb would not fetch this URL at all (scheme or address), whatever the server does."""


class HTTPStatusError(FetchError):
    """The server answered with an error status."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Policy:
    """What one fetch may do."""

    allow_private: bool = False
    """Let the URL reach loopback, private, link-local and other non-public addresses."""
    timeout_s: float = 60.0
    """Wall-clock budget for the whole fetch, redirects included."""
    max_bytes: int = 10 * 2**20
    """Most bytes of body kept, after decompression (a content-type check may lower it)."""
    max_redirects: int = 5


@dataclass
class Response:
    """A fetched body (status 2xx) or a "not modified" answer (304)."""

    url: str
    """The final URL after redirects, without a fragment."""
    status: int
    headers: dict[str, str]
    """Header names in lower case."""
    body: bytes = b""
    redirects: list[str] = field(default_factory=list)
    """The URLs that redirected, in order."""

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()

    @property
    def charset(self) -> str | None:
        for param in self.headers.get("content-type", "").split(";")[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "charset" and value.strip():
                return value.strip().strip("\"'")
        return None


# -- addresses --------------------------------------------------------------------------------


def address_problem(ip: str) -> str | None:
    """Why `ip` is not a public internet address (None when it is): loopback, private, link-local, ..."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return f"{ip} is not an IP address"
    if isinstance(addr, ipaddress.IPv6Address):
        # An IPv6 address that carries an IPv4 one reaches that IPv4 host: judge the embedded address.
        embedded = addr.ipv4_mapped or addr.sixtofour or (addr.teredo[1] if addr.teredo else None)
        if embedded is None and addr in NAT64:
            embedded = ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
        if embedded is not None:
            kind = _non_public_kind(embedded)
            return f"{ip.split('%', 1)[0]} maps to {embedded}, {kind}" if kind else None
    kind = _non_public_kind(addr)
    return f"{addr} is {kind}" if kind else None


def _non_public_kind(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    if addr.is_loopback:
        return "a loopback address"
    if addr.is_link_local:
        return "a link-local address"
    if addr.is_multicast:
        return "a multicast address"
    if addr.is_unspecified:
        return "the unspecified address"
    if addr.is_private:
        return "a private network address"
    if addr.is_reserved or not addr.is_global:
        return "a reserved address, not a public internet one"
    return None


def resolve(host: str, port: int, timeout_s: float) -> list[str]:
    """The host's IP addresses, within `timeout_s` (getaddrinfo itself cannot be interrupted)."""
    result: dict[str, object] = {}

    def lookup() -> None:
        try:
            result["ok"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            result["error"] = exc

    worker = threading.Thread(target=lookup, daemon=True, name="kb-resolve")
    worker.start()
    worker.join(max(timeout_s, 0.0))
    if worker.is_alive():
        raise FetchError(f"looking up {host} took longer than the time limit")
    if "error" in result:
        raise FetchError(f"cannot find the server {host} ({result['error']})")
    addresses = [info[4][0] for info in result["ok"]]  # type: ignore[union-attr]
    if not addresses:
        raise FetchError(f"cannot find the server {host}")
    return list(dict.fromkeys(addresses))


def _allowed_addresses(host: str, addresses: list[str], allow_private: bool) -> list[str]:
    """The addresses kb may connect to, in the resolver's order, or Refused naming why none qualifies."""
    if allow_private:
        return addresses
    problems = [address_problem(ip) for ip in addresses]
    allowed = [ip for ip, problem in zip(addresses, problems) if problem is None]
    if allowed:
        return allowed
    named = "" if host in addresses else f"{host} resolves to "
    raise Refused(f"refused: {named}{problems[0]}; pass --allow-private to fetch it")


# -- URLs ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str
    """ASCII (IDNA) host name or bare IP literal."""
    port: int
    request_path: str


def _parse_target(url: str) -> _Target:
    """Check a URL's scheme and split it for a request; Refused for anything but http(s)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise Refused(f"not a valid URL ({exc})") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        shown = f"{scheme}:" if scheme else "a URL without a scheme"
        raise Refused(f"refused: only http and https URLs are fetched, not {shown}")
    if parts.username is not None or parts.password is not None:
        raise Refused("refused: URLs with a user name or password in them are not fetched")
    host = parts.hostname
    if not host:
        raise Refused("not a valid URL (no host name)")
    try:
        ascii_host = host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError as exc:
        raise Refused(f"not a valid host name ({host})") from exc
    # Spaces and non-ASCII characters would make http.client refuse the request line.
    path = quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
    query = quote(parts.query, safe="/%:@!$&'()*+,;=-._~?")
    return _Target(
        scheme, ascii_host, port or (443 if scheme == "https" else 80), path + (f"?{query}" if query else "")
    )


def _without_fragment(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, parts.query, ""))


# -- connections pinned to the checked address --------------------------------------------------


def _connect(ips: list[str], port: int, deadline: float) -> socket.socket:
    """A TCP connection to the first checked address that answers (an IPv6 one may be unreachable)."""
    error: OSError | None = None
    for ip in ips:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            return socket.create_connection((ip, port), remaining)
        except OSError as exc:
            error = exc
    raise error or TimeoutError("no time left to connect")


class _PinnedHTTP(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, ips: list[str], deadline: float):
        super().__init__(host, port, timeout=max(deadline - time.monotonic(), 0.001))
        self._ips, self._deadline = ips, deadline
        self.pinned: socket.socket | None = None
        """The socket, kept for the watchdog: http.client drops `sock` once the response owns it."""

    def connect(self) -> None:
        self.sock = self.pinned = _connect(self._ips, self.port, self._deadline)


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, ips: list[str], deadline: float):
        super().__init__(
            host, port, timeout=max(deadline - time.monotonic(), 0.001), context=ssl.create_default_context()
        )
        self._ips, self._deadline = ips, deadline
        self.pinned: socket.socket | None = None

    def connect(self) -> None:
        raw = _connect(self._ips, self.port, self._deadline)
        # The certificate is checked against the name the user gave, not the address. The handshake
        # runs once `pinned` is set, so the watchdog covers it as well as the socket timeout does.
        self.sock = self.pinned = self._context.wrap_socket(
            raw, server_hostname=self.host, do_handshake_on_connect=False
        )
        self.pinned.do_handshake()


class _Watchdog:
    """Shuts the connection's socket at the deadline, which unblocks any read in progress."""

    def __init__(self, conn: _PinnedHTTP | _PinnedHTTPS, seconds: float):
        self.conn = conn
        self.fired = False
        self.timer = threading.Timer(max(seconds, 0.0), self._fire)
        self.timer.daemon = True

    def _fire(self) -> None:
        self.fired = True
        sock = self.conn.pinned
        if sock is not None:
            try:
                # The plain socket's shutdown, also under TLS: it only cuts the connection, so the
                # blocked read returns at once in the thread doing it.
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> _Watchdog:
        self.timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.timer.cancel()


# -- bodies ----------------------------------------------------------------------------------------


class _Decoder:
    """Undoes one Content-Encoding without ever producing more than `cap` bytes (a gzip bomb stops)."""

    def __init__(self, encoding: str, cap: int):
        self.encoding = encoding
        self.cap = cap
        self.produced = 0
        self._zlib: zlib._Decompress | None = None  # type: ignore[name-defined]

    def feed(self, data: bytes) -> bytes:
        if self.encoding == "identity":
            self.produced += len(data)
            self._check()
            return data
        out = bytearray()
        while data:
            if self._zlib is None:
                self._zlib = zlib.decompressobj(self._wbits(data))
            try:
                piece = self._zlib.decompress(data, self.cap - self.produced + 1)
            except zlib.error as exc:
                raise FetchError(f"the page's {self.encoding} compression is corrupt ({exc})") from exc
            self.produced += len(piece)
            self._check()
            out += piece
            data = self._zlib.unconsumed_tail
            if self._zlib.eof:  # a gzip stream may hold several members, one after another
                data, self._zlib = self._zlib.unused_data, None
        return bytes(out)

    def finish(self) -> bytes:
        if self._zlib is None:
            return b""
        tail = self._zlib.flush()
        self.produced += len(tail)
        self._check()
        return tail

    def _wbits(self, first: bytes) -> int:
        if self.encoding == "gzip":
            return 16 + zlib.MAX_WBITS
        # "deflate" is zlib-wrapped by the standard, raw deflate from some servers.
        if len(first) >= 2 and first[0] & 0x0F == 8 and (first[0] << 8 | first[1]) % 31 == 0:
            return zlib.MAX_WBITS
        return -zlib.MAX_WBITS

    def _check(self) -> None:
        if self.produced > self.cap:
            if self.encoding == "identity":
                raise FetchError(f"page too large (over the {_mb(self.cap)} limit)")
            raise FetchError(
                f"the {self.encoding}-compressed page unpacks to more than the {_mb(self.cap)} limit "
                "(a compression bomb?)"
            )


def _mb(n: float) -> str:
    if n < 2**20:
        return f"{max(n / 1024, 1):,.0f} KB"
    return f"{n / 2**20:,.1f} MB" if n < 10 * 2**20 else f"{n / 2**20:,.0f} MB"


def _encoding(headers: dict[str, str]) -> str:
    value = headers.get("content-encoding", "").strip().lower()
    if value in ("", "identity"):
        return "identity"
    if value in ("gzip", "x-gzip"):
        return "gzip"
    if value == "deflate":
        return "deflate"
    raise FetchError(f"the server used the content encoding {value!r}, which kb does not decode")


# -- the fetch -----------------------------------------------------------------------------------

BodyCheck = Callable[[str, int | None], int]
"""check(content_type, content_length) -> the byte cap for this body; raises FetchError to refuse it."""


def fetch(
    url: str,
    policy: Policy,
    *,
    conditional: Callable[[str], dict[str, str]] | None = None,
    check_body: BodyCheck | None = None,
    accept: str = "*/*",
) -> Response:
    """GET `url` following checked redirects; a 2xx body (decoded) or a 304, else FetchError.

    `conditional(url)` gives If-None-Match / If-Modified-Since headers for each URL asked, so a
    redirect to a page kb already holds is revalidated too.
    """
    deadline = time.monotonic() + policy.timeout_s
    redirects: list[str] = []
    current = _without_fragment(url.strip())
    while True:
        target = _parse_target(current)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _timeout(policy)
        ips = _allowed_addresses(target.host, resolve(target.host, target.port, remaining), policy.allow_private)
        headers = {
            "User-Agent": USER_AGENT,
            "Accept": accept,
            "Accept-Encoding": "gzip, deflate",
            "Connection": "close",
            **(conditional(current) if conditional else {}),
        }
        status, response_headers, body = _request(target, ips, headers, deadline, policy, check_body)
        if status in REDIRECTS and "location" in response_headers:
            if len(redirects) >= policy.max_redirects:
                raise FetchError(f"more than {policy.max_redirects} redirects")
            redirects.append(current)
            current = _without_fragment(urljoin(current, response_headers["location"].strip()))
            if urlsplit(current).scheme.lower() not in ("http", "https"):
                raise Refused(
                    f"refused: redirected to a {urlsplit(current).scheme or 'relative'}: URL "
                    "(only http and https are followed)"
                )
            continue
        if status == 304 or 200 <= status < 300:
            return Response(url=current, status=status, headers=response_headers, body=body, redirects=redirects)
        raise HTTPStatusError(f"the server answered {status} {http.client.responses.get(status, '')}".rstrip(), status)


def _timeout(policy: Policy) -> FetchError:
    return FetchError(f"took longer than {policy.timeout_s:g} s to download (the per-page time limit)")


def _request(
    target: _Target,
    ips: list[str],
    headers: dict[str, str],
    deadline: float,
    policy: Policy,
    check_body: BodyCheck | None,
) -> tuple[int, dict[str, str], bytes]:
    remaining = max(deadline - time.monotonic(), 0.001)
    cls = _PinnedHTTPS if target.scheme == "https" else _PinnedHTTP
    conn = cls(target.host, target.port, ips, deadline)
    try:
        with _Watchdog(conn, remaining) as watchdog:
            try:
                conn.request("GET", target.request_path, headers=headers)
                response = conn.getresponse()
                response_headers = {k.lower(): v for k, v in response.getheaders()}
                status = response.status
                body = b""
                if 200 <= status < 300:
                    body = _read_body(response, response_headers, policy, check_body)
            except FetchError:
                raise
            except (OSError, http.client.HTTPException, ValueError) as exc:
                if watchdog.fired or time.monotonic() >= deadline:
                    raise _timeout(policy) from exc
                raise FetchError(_network_reason(target, exc)) from exc
            if watchdog.fired:  # the cut connection looked like the end of the page or its headers
                raise _timeout(policy)
            return status, response_headers, body
    finally:
        conn.close()


def _read_body(
    response: http.client.HTTPResponse,
    headers: dict[str, str],
    policy: Policy,
    check_body: BodyCheck | None,
) -> bytes:
    length: int | None
    try:
        length = int(headers["content-length"]) if "content-length" in headers else None
    except ValueError:
        length = None
    content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    cap = min(policy.max_bytes, check_body(content_type, length)) if check_body else policy.max_bytes
    if length is not None and length > cap:
        # Refused before reading a byte of it.
        raise FetchError(f"page too large ({_mb(length)}; the limit is {_mb(cap)})")
    decoder = _Decoder(_encoding(headers), cap)
    body = bytearray()
    received = 0
    while True:
        # read1 returns whatever has arrived, so the watchdog and the caps act between small reads.
        block = response.read1(READ_SIZE)
        if not block:
            break
        received += len(block)
        if received > cap:
            raise FetchError(f"page too large (over the {_mb(cap)} limit)")
        body += decoder.feed(block)
    body += decoder.finish()
    return bytes(body)


def _network_reason(target: _Target, exc: BaseException) -> str:
    where = f"{target.host}:{target.port}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"the TLS certificate of {target.host} did not verify ({exc.verify_message})"
    if isinstance(exc, ssl.SSLError):
        return f"the TLS connection to {where} failed ({exc.reason or exc})"
    if isinstance(exc, ConnectionRefusedError):
        return f"the connection to {where} was refused"
    if isinstance(exc, http.client.IncompleteRead):
        return "the connection closed before the whole page arrived"
    if isinstance(exc, http.client.HTTPException):
        detail = str(exc)[:200] or type(exc).__name__
        return f"the server at {where} sent a malformed HTTP response ({detail})"
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"{where} did not answer in time"
    return f"cannot fetch from {where} ({getattr(exc, 'strerror', None) or exc})"
