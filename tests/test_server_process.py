"""webui.py as a real process: jobs outlive the connection that started them."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

from tests.fixtures.data_dirs import data_dir_with_checkpoints
from tests.fixtures.server import start_server
from tests.fixtures.tiny_checkpoints import build_tiny_model


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_job_finishes_and_saves_after_the_client_disconnects(tmp_path):
    data_dir_with_checkpoints(tmp_path, {"tiny.safetensors": build_tiny_model("sd1")})
    server = start_server(tmp_path, "--nowebui", ready_path="/sdapi/v1/samplers")
    try:
        body = json.dumps({"prompt": "x", "seed": 99, "width": 64, "height": 64, "steps": 150, "save_images": True,
                           "force_task_id": "orphan"}).encode()
        request = urllib.request.Request(server.url + "sdapi/v1/txt2img", data=body,
                                         headers={"Content-Type": "application/json"})
        try:
            urllib.request.urlopen(request, timeout=1.0)       # the client gives up long before the job ends
            raise AssertionError("the job finished within a second; make it longer")
        except (TimeoutError, urllib.error.URLError):
            pass
        deadline = time.monotonic() + 120
        status = None
        while time.monotonic() < deadline:
            status = _get_json(server.url + "sdapi/v1/progress?id=orphan&skip_current_image=true")["status"]
            if status not in ("queued", "running"):
                break
            time.sleep(0.2)
        assert status == "done", server.log()
        saved = list((tmp_path / "outputs" / "txt2img-images").rglob("*-99.png"))
        assert len(saved) == 1
    finally:
        server.stop()
