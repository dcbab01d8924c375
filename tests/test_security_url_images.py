"""URL images that never reach local addresses (SSRF): the fetcher behind every image field of the API refuses
this machine and private networks however a name or a redirect points there, pins the checked address against
DNS rebinding, and caps what it downloads (the API's answer to a refused URL: test_security_http.py)."""
from __future__ import annotations

import _socket
import socket
import time

import pytest
from fastapi import HTTPException

from modules.api.image_inputs import decode_image_field
from modules.options import Options
from modules.untrusted import url_images
from tests.fixtures.local_http import LocalServer, png_bytes, respond, this_machine_server
from tests.fixtures.png_bombs import png_declaring


@pytest.fixture
def local_server():
    """A server on 127.0.0.1: this machine, which a URL image must never reach."""
    server = this_machine_server()
    yield server
    server.close()


@pytest.fixture
def public_server(monkeypatch):
    """A server on 127.0.0.2 that the address check treats as public (for this server only), serving a PNG."""
    server = LocalServer("127.0.0.2")
    server.routes["/cat.png"] = respond(200, png_bytes((8, 6)), Content_Type="image/png")
    real_check = url_images.is_public_address
    monkeypatch.setattr(url_images, "is_public_address", lambda address: address == "127.0.0.2" or real_check(address))
    yield server
    server.close()


def resolving(monkeypatch, name: str, *answers: list[str]):
    """`name` resolves to answers[0] on the first lookup, answers[1] on the second, …; returns the lookup log."""
    real = socket.getaddrinfo
    lookups = []

    def getaddrinfo(host, port, *args, **kwargs):
        if host != name:
            return real(host, port, *args, **kwargs)
        addresses = answers[min(len(lookups), len(answers) - 1)]
        lookups.append(addresses)
        return [(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (address, port, 0, 0) if ":" in address else (address, port)) for address in addresses]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return lookups


@pytest.fixture
def options():
    values = Options(None)
    values.update({"api_enable_requests": True, "api_useragent": ""})
    return values


def refusal(value: str, options, loc=("init_images", 0)) -> str:
    """decode_image_field's 422 for `value`: checks the field is named, returns the message."""
    with pytest.raises(HTTPException) as caught:
        decode_image_field(value, list(loc), options)
    assert caught.value.status_code == 422
    [item] = caught.value.detail
    assert item["loc"] == ["body", *loc]
    return item["msg"]


def test_a_url_image_is_fetched_from_a_public_address(public_server, options, monkeypatch):
    image = decode_image_field(public_server.url("/cat.png"), ["init_images", 0], options)
    assert image.size == (8, 6) and image.mode == "RGB" and image.getpixel((0, 0)) == (200, 30, 30)
    lookups = resolving(monkeypatch, "images.example", ["127.0.0.2"])
    options.update({"api_useragent": "my-client/1.0"})
    assert decode_image_field(public_server.url("/cat.png", "images.example"), ["mask"], options).size == (8, 6)
    path, headers = public_server.requests[-1]
    assert headers["Host"] == f"images.example:{public_server.port}" and headers["User-Agent"] == "my-client/1.0"
    assert len(lookups) == 1


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "0.0.0.0", "2130706433", "0x7f.1", "127.1"])
def test_this_machine_is_never_fetched(local_server, options, monkeypatch, host):
    # Numeric spellings resolve without DNS (the suite's guard blocks every name but localhost).
    monkeypatch.setattr(socket, "getaddrinfo", lambda name, port, *args, **kwargs: _socket.getaddrinfo(
        name, port, 0, socket.SOCK_STREAM, 0, 0 if name == "localhost" else socket.AI_NUMERICHOST))
    message = refusal(f"http://{host}:{local_server.port}/secret.png", options)
    assert "local or private" in message, message
    assert local_server.requests == []


@pytest.mark.parametrize("answers", [["127.0.0.1"], ["10.0.0.1"], ["192.168.1.20"], ["169.254.169.254"],
                                     ["100.64.0.1"], ["::1"], ["::ffff:127.0.0.1"], ["::ffff:10.0.0.1"],
                                     ["fd00::1"], ["fe80::1"], ["2002:7f00:1::"], ["64:ff9b::a00:1"], ["::127.0.0.1"],
                                     ["224.0.0.1"], ["93.184.216.34", "10.0.0.1"]])
def test_a_public_looking_name_for_a_private_address_is_refused(monkeypatch, options, answers):
    resolving(monkeypatch, "images.example", answers)
    message = refusal("https://images.example/cat.png", options)
    assert "local or private" in message and answers[-1] in message


def test_a_redirect_to_this_machine_is_refused(public_server, local_server, options):
    public_server.routes["/moved"] = respond(302, Location=local_server.url("/secret.png"))
    assert "local or private" in refusal(public_server.url("/moved"), options)
    assert [path for path, _ in public_server.requests] == ["/moved"] and local_server.requests == []


def test_redirects_are_followed_up_to_three(public_server, options):
    for index in range(4):
        public_server.routes[f"/hop{index}"] = respond(301, Location=f"/hop{index + 1}")
    public_server.routes["/hop4"] = respond(200, png_bytes(), Content_Type="image/png")
    assert decode_image_field(public_server.url("/hop1"), ["image"], options).size == (8, 6)
    assert "more than 3 redirects" in refusal(public_server.url("/hop0"), options)


def test_dns_rebinding_cannot_move_the_connection(public_server, local_server, options, monkeypatch):
    """The name is checked once and the socket connects to the checked address; a second answer (here this
    machine) is never asked for."""
    local_server.port = public_server.port    # the same port on the rebound address
    lookups = resolving(monkeypatch, "rebind.example", ["127.0.0.2"], ["127.0.0.1"])
    image = decode_image_field(public_server.url("/cat.png", "rebind.example"), ["image"], options)
    assert image.size == (8, 6) and lookups == [["127.0.0.2"]] and local_server.requests == []


@pytest.mark.parametrize("url, expected", [
    ("file:///etc/passwd", "only http:// and https://"),
    ("ftp://example.com/cat.png", "only http:// and https://"),
    ("gopher://127.0.0.1:70/_x", "only http:// and https://"),
    ("http://user:pw@images.example/cat.png", "credentials"),
    ("https://user@images.example/cat.png", "credentials"),
    ("http:///cat.png", "no host"),
    ("http://images.example:99999/cat.png", "not valid"),
])
def test_other_schemes_and_credentials_are_refused(options, url, expected):
    assert expected in refusal(url, options)


def test_url_images_can_be_switched_off(public_server, options):
    options.update({"api_enable_requests": False})
    assert "URL images are disabled" in refusal(public_server.url("/cat.png"), options)
    assert public_server.requests == []


def test_downloads_are_capped_and_checked_like_uploads(public_server, options, monkeypatch):
    monkeypatch.setattr(url_images, "MAX_BYTES", 1000)
    public_server.routes.update({
        "/declared.png": respond(200, b"x" * 2000, Content_Type="image/png"),
        "/streamed.png": respond(200, b"x" * 5000, length=False, Content_Type="image/png"),
        "/page.html": respond(200, b"<html><script>alert(1)</script></html>", Content_Type="text/html"),
        "/bomb.png": respond(200, png_declaring(20000, 20000), Content_Type="image/png"),
    })
    assert "larger than the limit of 1000 bytes" in refusal(public_server.url("/declared.png"), options)
    assert "larger than the limit of 1000 bytes" in refusal(public_server.url("/streamed.png"), options)
    assert "not a supported image" in refusal(public_server.url("/page.html"), options)
    assert "more than the limit" in refusal(public_server.url("/bomb.png"), options)
    assert "HTTP 404" in refusal(public_server.url("/nothing-here.png"), options)


def test_a_slow_server_times_out(public_server, options, monkeypatch):
    monkeypatch.setattr(url_images, "TIMEOUT_SECONDS", 0.3)
    public_server.routes["/slow.png"] = respond(200, png_bytes(), delay=2.0, Content_Type="image/png")
    started = time.monotonic()
    assert "within" in refusal(public_server.url("/slow.png"), options)
    assert time.monotonic() - started < 1.5
