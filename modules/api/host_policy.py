"""Which names this server answers to: the defence against DNS rebinding.

A page on `evil.example` can make its own name resolve to 127.0.0.1 a moment after it loaded. The browser then
sends the page's requests to this server, same-origin in its eyes, with `Host: evil.example:7860` and a
matching `Origin`. Nothing but the Host header tells such a request from a real one, so every request (API,
UI, websocket) must name a host this server knows as its own.

Allowed without configuration:
- IP literals (127.0.0.1, [::1], 192.168.1.5): rebinding needs a name the attacker controls; a page whose
  origin is an IP address is served by that address, so its requests reach us only if the address is ours;
- `localhost` and names under `.localhost` (browsers resolve them to loopback themselves, RFC 6761);
- `--server-name`, and with `--listen` or `--server-name` this machine's host name (and `<name>.local`);
- every name `--allowed-hosts` lists: `example.com`, `.example.com` (it and every name under it), `*` (any
  name: for a proxy in front that checks names itself).
"""
from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit


def host_name(host_header: str) -> str:
    """`Host` header (or an origin's netloc) → the name alone, lowercase: "Example.com:7860" → "example.com",
    "[::1]:7860" → "::1"."""
    value = host_header.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value[1:]
    name, colon, port = value.rpartition(":")
    if colon and port.isdigit() and ":" not in name:
        return name.rstrip(".")
    return value.rstrip(".")


def _is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


class HostPolicy:
    """The names this server answers to (see the module doc)."""

    def __init__(self, *, allowed_hosts: str | None = None, server_name: str | None = None,
                 non_local: bool = False):
        entries = [entry.strip().lower().rstrip(".") for entry in (allowed_hosts or "").split(",") if entry.strip()]
        self.any = "*" in entries
        self.suffixes = tuple(entry for entry in entries if entry.startswith(".")) + (".localhost",)
        self.names = {entry for entry in entries if not entry.startswith(".")} | {"localhost"}
        if server_name:
            self.names.add(host_name(server_name))
        if non_local:
            machine = socket.gethostname().lower().rstrip(".")
            if machine:
                self.names |= {machine, f"{machine}.local"}

    @classmethod
    def from_args(cls, args) -> HostPolicy:
        return cls(allowed_hosts=getattr(args, "allowed_hosts", None), server_name=args.server_name,
                   non_local=bool(args.listen or args.server_name))

    def allows_name(self, name: str) -> bool:
        if self.any or _is_ip_literal(name) or name in self.names:
            return True
        return any(name.endswith(suffix) or name == suffix[1:] for suffix in self.suffixes)

    def allows_host_header(self, host_header: str | None) -> bool:
        """A request without a Host header comes from no browser (HTTP/1.0 tools): nothing to rebind."""
        return host_header is None or self.allows_name(host_name(host_header))

    def is_own_origin(self, origin: str, host_header: str | None) -> bool:
        """An `Origin` naming this server: an allowed host, and the very host (and port) the request was sent
        to. The scheme is not compared: behind a TLS proxy the page is https and the request reaching us http."""
        netloc = urlsplit(origin).netloc.lower()
        if not netloc or not self.allows_name(host_name(netloc)):
            return False
        return host_header is not None and netloc == host_header.strip().lower()
