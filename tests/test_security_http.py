"""Security at the edges of the HTTP server, as a client or an attacker's page sees it: CORS and cross-site
requests, the Host allow-list against DNS rebinding, framing, the files the UI serves, auth on every API route, and
the API's answer to a URL image it refuses (the URL fetcher itself: test_security_url_images.py)."""
from __future__ import annotations

import contextlib
import re
import socket
import time

import pytest
from fastapi import WebSocket, WebSocketDisconnect
from fastapi.routing import APIRoute, iter_route_contexts

from modules import cmd_args, services as services_module
from tests.fixtures.app_client import app_client
from tests.fixtures.local_http import png_bytes, this_machine_server
from tests.fixtures.server_control import RecordingControl


A1111_ERROR_KEYS = {"error", "detail", "body", "errors"}


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


# ---------------------------------------------------------------- URL images through the API


@pytest.fixture
def local_server():
    """A server on 127.0.0.1: this machine, which a URL image must never reach."""
    server = this_machine_server()
    yield server
    server.close()


def test_the_api_names_the_field_of_a_refused_url(cors_api, local_server):
    response = cors_api.post("/sdapi/v1/img2img", json={"init_images": [local_server.url("/secret.png")]})
    assert response.status_code == 422, response.text
    assert set(response.json()) == A1111_ERROR_KEYS and response.json()["errors"].startswith("body.init_images.0: ")
    assert local_server.requests == []
