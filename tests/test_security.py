"""Security at the edges, as a client or an attacker's page sees it: CORS and cross-site requests, URL images
that never reach local addresses (SSRF), the files the UI serves, and auth on every API route."""
from __future__ import annotations

import _socket
import contextlib
import http.server
import io
import re
import socket
import threading
import time

import pytest
from fastapi import HTTPException, WebSocket, WebSocketDisconnect
from fastapi.routing import APIRoute, iter_route_contexts
from PIL import Image

from modules import cmd_args, services as services_module
from modules.untrusted import url_images
from modules.api.image_inputs import decode_image_field
from tests.fixtures.app_client import app_client
from tests.fixtures.server_control import RecordingControl
from modules.options import Options
from tests.fixtures.png_bombs import png_declaring

A1111_ERROR_KEYS = {"error", "detail", "body", "errors"}


def png_bytes(size=(8, 6), colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


# ---------------------------------------------------------------- CORS and cross-site requests


@pytest.fixture(scope="module")
def ui_app(tmp_path_factory):
    """The whole app, UI mounted, as an operator who allows the data folder (an A1111 habit) runs it, reached by
    the name pc.example: --api --api-auth user:pw --api-server-stop --gradio-allowed-path <data>
    --allowed-hosts pc.example, no CORS flags."""
    data = tmp_path_factory.mktemp("data")
    args = cmd_args.parse_args(["--data-dir", str(data), "--api", "--api-auth", "user:pw", "--api-server-stop",
                                "--gradio-allowed-path", str(data), "--allowed-hosts", "pc.example"])
    services = services_module.create(args)
    from webui import create_app

    control = RecordingControl()
    app = create_app(services, server_control=control)
    with app_client(app, base_url="http://pc.example:7860") as client:
        client.app_under_test, client.services, client.control = app, services, control
        yield client
    services.shutdown()


@pytest.fixture(scope="module")
def cors_api(tmp_path_factory):
    """The API alone with both CORS flags."""
    args = cmd_args.parse_args(["--data-dir", str(tmp_path_factory.mktemp("data")), "--api", "--nowebui",
                                "--cors-allow-origins", "https://good.example, https://also.example",
                                "--cors-allow-origins-regex", r"https://[a-z]+\.trusted\.example"])
    services = services_module.create(args)
    from webui import create_app

    with app_client(create_app(services)) as client:
        client.services = services
        yield client
    services.shutdown()


def preflight(client, path: str, origin: str):
    return client.options(path, headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                                         "Access-Control-Request-Headers": "content-type"})


@pytest.mark.parametrize("origin", ["https://good.example", "https://also.example", "https://app.trusted.example"])
def test_an_allowed_origin_gets_cors_and_may_post(cors_api, origin):
    answer = preflight(cors_api, "/sdapi/v1/options", origin)
    assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == origin
    assert answer.headers["access-control-allow-credentials"] == "true"
    posted = cors_api.post("/sdapi/v1/refresh-checkpoints", headers={"Origin": origin})
    assert posted.status_code == 200 and posted.headers["access-control-allow-origin"] == origin


@pytest.mark.parametrize("origin", ["https://evil.example", "https://good.example.evil.example",
                                    "https://app.trusted.example.evil.example", "null"])
def test_a_foreign_origin_gets_no_cors_and_cannot_post(cors_api, origin):
    answer = preflight(cors_api, "/sdapi/v1/options", origin)
    assert "access-control-allow-origin" not in answer.headers
    posted = cors_api.post("/sdapi/v1/refresh-checkpoints", headers={"Origin": origin})
    assert posted.status_code == 403 and "access-control-allow-origin" not in posted.headers
    assert set(posted.json()) == A1111_ERROR_KEYS and origin in posted.json()["detail"]


def cors_headers(response) -> list[str]:
    return [name for name in response.headers if name.lower().startswith("access-control-")]


def test_no_cors_headers_at_all_without_the_flags(ui_app):
    """Gradio's own CORS answers any origin when the Host is not localhost (here "pc.example")."""
    evil = {"Origin": "https://evil.example"}
    for path in ("/sdapi/v1/options", "/gradio_api/queue/join", "/gradio_api/upload", "/"):
        answer = preflight(ui_app, path, evil["Origin"])
        assert cors_headers(answer) == [], (path, answer.headers)
    for response in (ui_app.get("/", headers=evil), ui_app.get("/gradio_api/info", headers=evil),
                     ui_app.get("/sdapi/v1/samplers", auth=("user", "pw"), headers=evil)):
        assert response.status_code == 200 and cors_headers(response) == []


@pytest.mark.parametrize("path", ["/sdapi/v1/interrupt", "/sdapi/v1/options", "/controlnet/detect",
                                  "/internal/progress", "/sdapi/v1/server-stop", "/gradio_api/queue/join",
                                  "/gradio_api/upload"])
@pytest.mark.parametrize("origin", ["null", "https://evil.example", "http://pc.example.evil.example",
                                    "http://pc.example:7861", "http://localhost:7860"])
def test_cross_site_posts_to_every_api_prefix_are_refused(ui_app, path, origin):
    calls = list(ui_app.control.calls)
    response = ui_app.post(path, auth=("user", "pw"), json={}, headers={"Origin": origin})
    assert response.status_code == 403, response.text
    assert set(response.json()) == A1111_ERROR_KEYS and "cross-origin" in response.json()["errors"]
    assert ui_app.control.calls == calls       # the server was not stopped


def test_same_origin_and_originless_posts_pass(ui_app):
    auth = ("user", "pw")
    assert ui_app.post("/sdapi/v1/interrupt", auth=auth, headers={"Origin": "http://pc.example:7860"}).status_code == 200
    # behind a TLS proxy the page is https and the request reaching us http, with the same host
    assert ui_app.post("/sdapi/v1/interrupt", auth=auth, headers={"Origin": "https://pc.example:7860"}).status_code == 200
    assert ui_app.post("/sdapi/v1/interrupt", auth=auth).status_code == 200    # curl, Python clients


@pytest.mark.parametrize("path", ["/sdapi/v1/options", "/sdapi/v1/png-info"])
def test_bodies_over_the_limit_are_refused_even_without_a_length(cors_api, monkeypatch, path):
    from modules.api import middleware

    monkeypatch.setattr(middleware, "MAX_BODY_BYTES", 100)
    chunks = (b'{"image": "' + b"A" * 60, b"A" * 60 + b'"}')
    declared = cors_api.post(path, content=b"".join(chunks), headers={"Content-Type": "application/json"})
    streamed = cors_api.post(path, content=iter(chunks), headers={"Content-Type": "application/json"})
    for response in (declared, streamed):
        assert response.status_code == 413, response.text
        assert set(response.json()) == A1111_ERROR_KEYS and "limited to 100 bytes" in response.json()["errors"]
    assert "content-length" not in streamed.request.headers
    monkeypatch.undo()
    assert cors_api.get("/sdapi/v1/samplers").status_code == 200


def test_a_bad_origin_regex_is_named():
    from modules.api.middleware import OriginPolicy

    with pytest.raises(ValueError, match="--cors-allow-origins-regex"):
        OriginPolicy(None, "https://(unclosed")


def test_a_backtracking_origin_regex_cannot_be_used_to_freeze_the_server(tmp_path):
    """The operator's pattern, the client's Origin: a long one made Python's re backtrack for as long as the client
    liked, holding every thread."""
    args = cmd_args.parse_args(["--data-dir", str(tmp_path), "--api", "--nowebui", "--skip-load-model-at-start",
                                "--cors-allow-origins-regex", r"https://(\w|\w\w)+\.trusted\.example\s?"])
    services = services_module.create(args)
    from webui import create_app

    with app_client(create_app(services)) as client:
        good = "https://app.trusted.example"
        assert preflight(client, "/sdapi/v1/options", good).headers["access-control-allow-origin"] == good
        for origin in ("https://" + "a" * 60 + "!", "https://" + "a" * 5000):
            started = time.perf_counter()
            answer = preflight(client, "/sdapi/v1/options", origin)
            posted = client.post("/sdapi/v1/interrupt", headers={"Origin": origin})
            assert time.perf_counter() - started < 1
            assert "access-control-allow-origin" not in answer.headers and posted.status_code == 403
    services.shutdown()


# ---------------------------------------------------------------- DNS rebinding: the Host allow-list


@pytest.fixture(scope="module")
def default_app(tmp_path_factory):
    """The whole app as most users run it: on localhost, --api, no auth, no CORS flags."""
    args = cmd_args.parse_args(["--data-dir", str(tmp_path_factory.mktemp("data")), "--api",
                                "--skip-load-model-at-start"])
    services = services_module.create(args)
    from webui import create_app

    app = create_app(services)

    @app.websocket("/probe-socket")   # the app itself has none; extensions may add some
    async def probe_socket(socket: WebSocket):
        await socket.accept()
        await socket.send_text("hello")
        with contextlib.suppress(WebSocketDisconnect):
            await socket.receive_text()

    app.router.routes.insert(0, app.router.routes.pop())   # before the UI, mounted at "/" (it answers for all)
    with app_client(app) as client:
        client.services = services
        yield client
    services.shutdown()


# One call of each route family: the API, the ControlNet API, /internal, the UI page, its config, its queue (how
# Extensions → Install is called), uploads and served files.
ROUTE_FAMILIES = [("POST", "/sdapi/v1/options"), ("POST", "/sdapi/v1/txt2img"), ("GET", "/sdapi/v1/progress"),
                  ("POST", "/controlnet/detect"), ("GET", "/internal/ping"), ("GET", "/"), ("GET", "/config"),
                  ("POST", "/gradio_api/queue/join"), ("POST", "/gradio_api/upload"), ("GET", "/gradio_api/info"),
                  ("GET", "/gradio_api/file=README.md"), ("OPTIONS", "/sdapi/v1/options")]
REBOUND = {"Host": "evil.example:7860", "Origin": "http://evil.example:7860"}


@pytest.mark.parametrize("method, path", ROUTE_FAMILIES)
def test_a_rebound_name_gets_nothing_from_any_route(default_app, method, path):
    before = default_app.services.options.as_dict()
    response = default_app.request(method, path, headers=REBOUND, json={"samples_format": "jpg"})
    assert response.status_code == 400, (method, path, response.status_code, response.text[:200])
    body = response.json()
    assert set(body) == A1111_ERROR_KEYS and "evil.example" in body["detail"] and "--allowed-hosts" in body["detail"]
    assert default_app.services.options.as_dict() == before
    # the host name alone is enough: the same call without an Origin, as from a form or an <img>
    assert default_app.request(method, path, headers={"Host": "evil.example"}).status_code == 400


def test_the_real_names_still_work(default_app):
    for host in ("127.0.0.1:7860", "localhost:7860", "[::1]:7860", "LOCALHOST", "app.localhost:7860",
                 "192.168.1.20:7860"):
        assert default_app.get("/internal/ping", headers={"Host": host}).status_code == 200, host
        assert default_app.get("/", headers={"Host": host}).status_code == 200, host
    same_origin = {"Host": "localhost:7860", "Origin": "http://localhost:7860"}
    assert default_app.post("/sdapi/v1/interrupt", headers=same_origin).status_code == 200


def test_a_page_of_another_local_site_cannot_post(default_app):
    """Another server on this machine (another port) is another site: its pages may not call us."""
    for origin in ("http://localhost:3000", "http://127.0.0.1:8080", "http://evil.example:7860"):
        response = default_app.post("/sdapi/v1/interrupt", headers={"Origin": origin})
        assert response.status_code == 403, origin


def test_websockets_check_the_host_and_the_origin(default_app):
    url = "ws://127.0.0.1:7860/probe-socket"   # (the test client sends Host: testserver unless told)
    for headers in ({}, {"Origin": "http://127.0.0.1:7860"}):
        with default_app.websocket_connect(url, headers=headers) as socket:
            assert socket.receive_text() == "hello"
    for headers in (REBOUND, {"Host": "evil.example"}, {"Origin": "https://evil.example"}):
        with pytest.raises(WebSocketDisconnect) as refused:
            with default_app.websocket_connect(url, headers=headers) as socket:
                socket.receive_text()
        assert refused.value.code == 1008


@pytest.mark.parametrize("flags, host, allowed", [
    ([], "evil.example", False),
    (["--server-name", "studio.lan"], "studio.lan:7860", True),
    (["--server-name", "studio.lan"], "other.lan", False),
    (["--allowed-hosts", "pc.example.com, .home.arpa"], "pc.example.com", True),
    (["--allowed-hosts", "pc.example.com, .home.arpa"], "gpu.home.arpa:7860", True),
    (["--allowed-hosts", "pc.example.com, .home.arpa"], "home.arpa", True),
    (["--allowed-hosts", "pc.example.com, .home.arpa"], "evilhome.arpa", False),
    (["--allowed-hosts", "*"], "anything.example", True),
])
def test_names_the_operator_configures(flags, host, allowed):
    from modules.api.host_policy import HostPolicy

    assert HostPolicy.from_args(cmd_args.parse_args(flags)).allows_host_header(host) is allowed


def test_with_listen_this_machines_name_is_allowed(monkeypatch):
    from modules.api.host_policy import HostPolicy

    monkeypatch.setattr(socket, "gethostname", lambda: "Studio-PC")
    assert HostPolicy.from_args(cmd_args.parse_args(["--listen"])).allows_host_header("studio-pc:7860")
    assert HostPolicy.from_args(cmd_args.parse_args(["--listen"])).allows_host_header("studio-pc.local:7860")
    assert not HostPolicy.from_args(cmd_args.parse_args([])).allows_host_header("studio-pc:7860")


def test_no_page_of_another_site_may_frame_the_ui(default_app):
    for path in ("/", "/sdapi/v1/samplers", "/gradio_api/info"):
        response = default_app.get(path)
        assert response.headers["x-frame-options"] == "SAMEORIGIN"
        assert "frame-ancestors 'self'" in response.headers["content-security-policy"]


# ---------------------------------------------------------------- URL images (SSRF)


def respond(status: int, body: bytes = b"", delay: float = 0.0, length: bool = True, **headers):
    def handle(handler):
        time.sleep(delay)
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name.replace("_", "-"), value)
        if length:
            handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
    return handle


class LocalServer:
    """An HTTP server on a loopback address: path → responder; every request's path and headers recorded."""

    def __init__(self, host: str):
        self.host, self.routes, self.requests = host, {}, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append((self.path, dict(self.headers)))
                outer.routes.get(self.path, respond(404, b"missing"))(self)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda request, address: None   # a client that gave up (timeout tests)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path: str, host: str | None = None) -> str:
        return f"http://{host or self.host}:{self.port}{path}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def local_server():
    """A server on 127.0.0.1: this machine, which a URL image must never reach."""
    server = LocalServer("127.0.0.1")
    server.routes["/secret.png"] = respond(200, png_bytes(), Content_Type="image/png")
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


def test_the_api_names_the_field_of_a_refused_url(cors_api, local_server):
    response = cors_api.post("/sdapi/v1/img2img", json={"init_images": [local_server.url("/secret.png")]})
    assert response.status_code == 422, response.text
    assert set(response.json()) == A1111_ERROR_KEYS and response.json()["errors"].startswith("body.init_images.0: ")
    assert local_server.requests == []


# ---------------------------------------------------------------- files the UI serves


@pytest.fixture(scope="module")
def served(ui_app):
    outputs = ui_app.services.paths.outputs
    (outputs / "txt2img-images").mkdir(parents=True, exist_ok=True)
    files = {"png": outputs / "txt2img-images" / "00001-1.png", "svg": outputs / "drawing.svg",
             "html": outputs / "page.html"}
    files["png"].write_bytes(png_bytes())
    files["svg"].write_text("<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>")
    files["html"].write_text("<script>alert(document.cookie)</script>")
    ui_app.services.paths.config_file.write_text('{"token": "do-not-serve"}')
    return files


def test_outputs_are_served_and_images_stay_inline(ui_app, served):
    response = ui_app.get(f"/gradio_api/file={served['png']}")
    assert response.status_code == 200 and response.content == served["png"].read_bytes()
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert not response.headers.get("content-disposition", "").startswith("attachment")


@pytest.mark.parametrize("kind", ["svg", "html"])
def test_scriptable_outputs_are_downloads(ui_app, served, kind):
    response = ui_app.get(f"/gradio_api/file={served[kind]}")
    assert response.status_code == 200
    assert response.headers["content-disposition"].startswith("attachment")
    assert response.headers["x-content-type-options"] == "nosniff"


def test_settings_secrets_and_other_files_are_not_served(ui_app, served, tmp_path, monkeypatch):
    config = ui_app.services.paths.config_file
    monkeypatch.chdir(tmp_path)       # the server's working folder holds the usual secrets
    (tmp_path / ".env").write_text("TOKEN=do-not-serve")
    (tmp_path / "config.json").write_text("{}")
    refused = [config,                                    # blocked although its folder is allowed
               config.with_name("CONFIG.JSON"), config.with_name("Config.json"),
               str(config).upper(),
               tmp_path / ".env", ".env", "config.json", tmp_path / "config.json",
               "/etc/passwd", f"{served['png'].parent}/../../config.json",
               "http://127.0.0.1:9/x.png", "https://example.com/x.png"]
    for path in refused:
        response = ui_app.get(f"/gradio_api/file={path}")
        assert response.status_code in (403, 404), (path, response.status_code)
        assert b"do-not-serve" not in response.content
    assert "fetches no URLs" in ui_app.get("/gradio_api/file=HTTPS://example.com/x.png").text


def test_blocked_paths_keep_secrets_inside_allowed_folders(ui_app):
    from modules.ui import served_paths

    allowed, blocked = served_paths(ui_app.services)
    data = ui_app.services.paths.data
    assert str(ui_app.services.paths.outputs) in allowed and str(data) in allowed
    assert str(ui_app.services.paths.config_file) in blocked


# ---------------------------------------------------------------- auth on every API route

KNOWN_API_PREFIXES = {"sdapi", "controlnet", "internal"}


def api_routes(app) -> list[tuple[str, str]]:
    """(method, path) of every API route the app serves, included routers flattened."""
    routes = []
    for context in iter_route_contexts(app.routes):
        if isinstance(context.original_route, APIRoute):
            prefix = context.path.split("/")[1]
            assert prefix in KNOWN_API_PREFIXES, (
                f"{context.path}: an API prefix this test does not know; add it to KNOWN_API_PREFIXES, to "
                "middleware.API_PREFIXES (the Origin check) and make sure --api-auth covers it")
            routes += [(method, re.sub(r"\{[^}]+\}", "x", context.path)) for method in sorted(context.methods)]
    return routes


def test_api_auth_covers_every_api_route(ui_app):
    routes = api_routes(ui_app.app_under_test)
    paths = {path for _, path in routes}
    assert {"/sdapi/v1/txt2img", "/sdapi/v1/options", "/controlnet/model_list", "/internal/ping",
            "/sdapi/v1/server-stop"} <= paths
    for method, path in routes:
        assert ui_app.request(method, path).status_code == 401, (method, path)
        assert ui_app.request(method, path, auth=("user", "wrong")).status_code == 401, (method, path)
        assert ui_app.request(method, path, auth=("someone", "pw")).status_code == 401, (method, path)
    # the right password opens them all (no body: 422 where one is needed)
    for method, path in routes:
        assert ui_app.request(method, path, auth=("user", "pw")).status_code != 401, (method, path)


def test_the_route_list_is_not_empty_without_the_ui(cors_api):
    """The enumeration itself works (an empty list would let the auth test pass on nothing)."""
    assert len(api_routes(cors_api.app)) > 20

