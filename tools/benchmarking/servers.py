"""webui.py started as a real server: seconds from its start to the first image (our start-up figure of a mode) and
to the UI's first answer."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from . import ROOT
from .cases import txt2img_payload
from .ours import our_args
from .workers import last_line


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))   # never through an http_proxy


def start_to_first_image(spec: dict, log_path: Path, timeout: float) -> float:
    """Seconds from starting `webui.py --nowebui --api` (with the mode's flags and settings) to the first
    txt2img answer that holds an image; the request is sent as soon as the port accepts connections."""
    port = free_port()
    argv = [sys.executable, str(ROOT / "webui.py"), "--port", str(port), *our_args(spec)]
    payload = json.dumps(txt2img_payload(spec["checkpoint_name"], spec["size"], spec["steps"])).encode()
    started = time.perf_counter()
    with open(log_path, "wb") as log:
        server = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"the server exited ({server.returncode}): {last_line(log_path)}")
            if time.perf_counter() - started > timeout:
                raise RuntimeError(f"no image within {timeout:.0f} s")
            request = urllib.request.Request(f"http://127.0.0.1:{port}/sdapi/v1/txt2img", data=payload,
                                             headers={"Content-Type": "application/json"})
            try:
                with _LOCAL.open(request, timeout=timeout) as response:
                    body = json.loads(response.read())
            except urllib.error.HTTPError as error:
                raise RuntimeError(f"txt2img answered {error.code}: {error.read()[:300]!r}") from None
            except OSError:   # not listening yet
                time.sleep(0.1)
                continue
            if not body.get("images"):
                raise RuntimeError("txt2img answered without an image")
            return time.perf_counter() - started
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def bench_startup(args: list[str], timeout: float = 180) -> float:
    """Seconds from starting the server with the UI to its first HTTP 200 on /."""
    port = free_port()
    started = time.perf_counter()
    server = subprocess.Popen([sys.executable, str(ROOT / "webui.py"), "--port", str(port), "--api", *args],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.perf_counter() - started < timeout:
            try:
                with _LOCAL.open(f"http://127.0.0.1:{port}/", timeout=2) as response:
                    if response.status == 200:
                        return time.perf_counter() - started
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"the server did not answer within {timeout:.0f} s")
    finally:
        server.terminate()
        server.wait(30)
