"""Images given as http(s) URLs (A1111's API accepts them where it takes base64), fetched without letting a
request reach this machine or its private network (SSRF).

A1111's `verify_url` resolves the name and checks the addresses, then lets `requests` resolve it again to
connect, so a DNS answer that changes in between (rebinding) wins. Here the check is at the socket: the
connection goes to the very address that was checked, while the Host header and the TLS certificate check
keep the name from the URL. Redirects are followed by hand, each target checked like the first URL.

Hand-written on httpcore (httpx's transport layer) because no maintained library fetches like this:
safehttpx, the one Gradio uses, asks dns.google when the local resolver gives no public address (a call to
a third party, which this offline-first app never makes), takes embedded-IPv4 forms such as 6to4 of
127.0.0.1 for public, and is async-only.
"""
from __future__ import annotations

import ipaddress
import re
import socket
import time
import urllib.parse

import httpcore
from PIL import Image

from modules import images

MAX_BYTES = 50 * 1024 * 1024
TIMEOUT_SECONDS = 15.0
MAX_REDIRECTS = 3
DEFAULT_USER_AGENT = "stable-diffusion-webui"

_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_REDIRECTS = {301, 302, 303, 307, 308}
# IPv6 ranges whose last 32 bits are an IPv4 address the packet ends up at: IPv4-compatible (::/96),
# IPv4-mapped, and NAT64's well-known prefix. 6to4 (2002::/16) embeds one too (`sixtofour`).
_EMBEDS_IPV4 = tuple(ipaddress.ip_network(net) for net in ("::/96", "::ffff:0:0/96", "64:ff9b::/96"))


class UrlImageError(ValueError):
    """A URL image that was refused or could not be fetched; the message is meant for the client."""


def looks_like_url(value) -> bool:
    """`scheme://…`: base64 and data URIs never contain "://", so anything that does is a URL."""
    return isinstance(value, str) and bool(_SCHEME.match(value.strip()))


def is_public_address(address: str) -> bool:
    """Only globally routable unicast addresses, also when an IPv6 address carries an IPv4 one."""
    ip = ipaddress.ip_address(address)
    if not ip.is_global or ip.is_multicast:
        return False
    if ip.version == 6:
        embedded = ip.sixtofour or next(
            (ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) for net in _EMBEDS_IPV4 if ip in net), None)
        if embedded is not None:
            return embedded.is_global and not embedded.is_multicast
    return True


def public_address(host: str, port: int) -> str:
    """Resolve `host`; refuse it if any of its addresses is not public (a name that is partly local is not
    trusted), else the first address, the one to connect to."""
    try:
        answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        raise UrlImageError(f"cannot resolve {host!r} ({error})") from None
    addresses = [answer[4][0] for answer in answers if answer[0] in (socket.AF_INET, socket.AF_INET6)]
    if not addresses:
        raise UrlImageError(f"{host!r} has no IP address")
    for address in addresses:
        if not is_public_address(address):
            raise UrlImageError(f"{host!r} is a local or private address ({address}); URL images are only "
                                "fetched from public addresses")
    return addresses[0]


class _PublicOnlyBackend(httpcore.SyncBackend):
    """Every connection, redirects included, goes to an address `public_address` has just checked."""

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        return super().connect_tcp(public_address(host, port), port, timeout, local_address, socket_options)


def _parse(url: str) -> tuple[httpcore.URL, bytes]:
    """The URL httpcore is given, built from one parse of ours, and the Host header (brackets kept for IPv6)."""
    parts = urllib.parse.urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UrlImageError(f"only http:// and https:// URLs are accepted, not {scheme}://")
    if "@" in parts.netloc:
        raise UrlImageError("URLs with credentials (user:password@) are not accepted")
    if not parts.hostname:
        raise UrlImageError("the URL has no host")
    try:
        port = parts.port
        host = parts.hostname.encode("idna")
        host_header = parts.netloc.encode("idna")
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        target = urllib.parse.quote(path, safe="!#$%&'()*+,/:;=?@[]~").encode("ascii")   # as a browser sends it
    except (ValueError, UnicodeError):
        raise UrlImageError("the URL's host, port or path is not valid") from None
    return httpcore.URL(scheme=scheme.encode(), host=host, port=port, target=target), host_header


def _header(response: httpcore.Response, name: bytes) -> str | None:
    for key, value in response.headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _read_capped(response: httpcore.Response, deadline: float) -> bytes:
    length = _header(response, b"content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BYTES:
        raise UrlImageError(f"the image is larger than the limit of {MAX_BYTES} bytes")
    data = bytearray()
    for chunk in response.iter_stream():
        data += chunk
        if len(data) > MAX_BYTES:
            raise UrlImageError(f"the image is larger than the limit of {MAX_BYTES} bytes")
        if time.monotonic() > deadline:   # a server trickling bytes slower than the read timeout
            raise UrlImageError(f"the download took longer than {TIMEOUT_SECONDS:.0f} s")
    return bytes(data)


def fetch(url: str, *, user_agent: str = "") -> bytes:
    """The body behind `url`, at most MAX_BYTES, within about TIMEOUT_SECONDS, from public addresses only.

    Blocking (DNS and network): callers on an event loop run it in a worker thread."""
    deadline = time.monotonic() + TIMEOUT_SECONDS
    with httpcore.ConnectionPool(network_backend=_PublicOnlyBackend(), retries=0) as pool:
        for _ in range(MAX_REDIRECTS + 1):
            target, host = _parse(url)
            remaining = max(deadline - time.monotonic(), 0.1)
            headers = [(b"Host", host), (b"Accept", b"image/*"),
                       (b"User-Agent", (user_agent or DEFAULT_USER_AGENT).encode("latin-1", "replace"))]
            try:
                with pool.stream("GET", target, headers=headers, extensions={"timeout": dict.fromkeys(
                        ("connect", "read", "write", "pool"), remaining)}) as response:
                    location = _header(response, b"location")
                    if response.status in _REDIRECTS and location:
                        url = urllib.parse.urljoin(url, location)
                        continue
                    if response.status != 200:
                        raise UrlImageError(f"the server answered HTTP {response.status}")
                    return _read_capped(response, deadline)
            except httpcore.TimeoutException:
                raise UrlImageError(f"no answer within {TIMEOUT_SECONDS:.0f} s") from None
            except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol, OSError) as error:
                raise UrlImageError(f"could not fetch the image ({type(error).__name__}: {error})") from None
    raise UrlImageError(f"more than {MAX_REDIRECTS} redirects")


def fetch_image(url: str, *, user_agent: str = "", max_pixels: int = 4096 * 4096) -> Image.Image:
    """The image behind `url`, with the same format and size limits as a base64 one."""
    data = fetch(url, user_agent=user_agent)
    return images.decode_image_bytes(data, max_pixels=max_pixels)   # the one decoding path: formats, pixel cap
