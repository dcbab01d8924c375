"""Test-wide guards: no network, fixed CPU threads."""
import ipaddress
import os
import shutil
import socket

import pytest
import torch

torch.set_num_threads(2)

_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _is_local(address) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX path
        return True
    host = address[0]
    if host in _LOCAL_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _guarded_connect(self, address):
    if not _is_local(address):
        raise OSError(f"network access blocked in tests: {address!r}")
    return _real_connect(self, address)


def _guarded_connect_ex(self, address):
    if not _is_local(address):
        raise OSError(f"network access blocked in tests: {address!r}")
    return _real_connect_ex(self, address)


def _blocked_getaddrinfo(host, *args, **kwargs):
    if host not in _LOCAL_HOSTS and host is not None:
        try:
            if not ipaddress.ip_address(host).is_loopback:
                raise OSError(f"DNS lookup blocked in tests: {host!r}")
        except ValueError:
            raise OSError(f"DNS lookup blocked in tests: {host!r}") from None
    return _real_getaddrinfo(host, *args, **kwargs)


_real_getaddrinfo = socket.getaddrinfo


@pytest.fixture(autouse=True, scope="session")
def block_network():
    """Every test runs with non-loopback connections and DNS refused."""
    socket.socket.connect = _guarded_connect
    socket.socket.connect_ex = _guarded_connect_ex
    socket.getaddrinfo = _blocked_getaddrinfo
    yield
    socket.socket.connect = _real_connect
    socket.socket.connect_ex = _real_connect_ex
    socket.getaddrinfo = _real_getaddrinfo


# ---------------------------------------------------------------- the browser tests' Chromium

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def browser():
    """Headless Debian Chromium driven by Playwright (Playwright cannot download its own browsers here)."""
    if os.environ.get("SKIP_BROWSER_TESTS") == "1":
        pytest.skip("SKIP_BROWSER_TESTS=1")
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("Chromium is not installed: run `apt-get install -y chromium` as root "
                    "(or set SKIP_BROWSER_TESTS=1 to skip the browser tests)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture
def tiny_sd1_server(tmp_path):
    """webui.py serving a data dir (tmp_path) with one tiny SD1 checkpoint, tiny-sd1.safetensors."""
    from tests.fixtures.server import start_server
    from tests.fixtures.tiny_checkpoints import build_tiny_model, write_safetensors

    checkpoint = tmp_path / "models" / "Stable-diffusion" / "tiny-sd1.safetensors"
    checkpoint.parent.mkdir(parents=True)
    write_safetensors(build_tiny_model("sd1"), checkpoint)
    server = start_server(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def tiny_sd1_page(browser, tiny_sd1_server):
    """A browser page on `tiny_sd1_server` once tiny-sd1 is the loaded model; script errors of the page
    collect in `page.errors`."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.goto(tiny_sd1_server.url, wait_until="domcontentloaded")
    page.wait_for_function(
        "() => (document.querySelector('#setting_sd_model_checkpoint input') || {}).value?.includes('tiny-sd1')",
        timeout=60_000)
    yield page
    page.close()
