"""The rest of A1111's /sdapi/v1 routes, server control and the job queue's order, as a client sees them."""
from __future__ import annotations

import base64
import dataclasses
import io
import json
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import git
import pytest
from PIL import Image

from modules import cmd_args, services as services_module
from tests.fixtures.app_client import app_client
from tests.fixtures.data_dirs import data_dir_with_checkpoints
from tests.fixtures.server import start_server
from tests.fixtures.server_control import RecordingControl
from tests.fixtures.tiny_checkpoints import build_tiny_model

SMALL = {"width": 64, "height": 64, "steps": 2}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = data_dir_with_checkpoints(tmp_path_factory.mktemp("data"), {
        "tiny-sd1.safetensors": build_tiny_model("sd1"), "other-sd1.safetensors": build_tiny_model("sd1", seed=1)})
    args = cmd_args.parse_args(["--data-dir", str(data), "--nowebui", "--api-server-stop"])
    services = services_module.create(args)
    control = RecordingControl()
    from webui import create_app

    with app_client(create_app(services, control)) as client:
        client.services, client.control = services, control
        yield client
    services.shutdown()


def wait_until(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def start_long_job(server, job_id: str, steps: int = 150):
    """A txt2img in a thread; returns the thread and a dict that receives its response, once it is running."""
    result = {}

    def call():
        result["response"] = server.post("/sdapi/v1/txt2img", json={
            "prompt": "x", "seed": 1, "width": 64, "height": 64, "steps": steps, "force_task_id": job_id})

    thread = threading.Thread(target=call)
    thread.start()
    wait_until(lambda: "response" in result or ((job := server.services.queue.get(job_id)) and job.step > 0))
    assert "response" not in result, result["response"].text     # it must still be running
    return thread, result


# ---------------------------------------------------------------- unload / reload

def test_unload_frees_the_models_and_the_next_txt2img_loads_on_demand(server):
    assert server.post("/sdapi/v1/txt2img", json={"prompt": "x", **SMALL}).status_code == 200
    assert server.services.models.loaded_names()
    response = server.post("/sdapi/v1/unload-checkpoint")
    assert response.status_code == 200 and response.json() == {}
    assert server.services.models.current is None and server.services.models.loaded_names() == []
    response = server.post("/sdapi/v1/txt2img", json={"prompt": "x", "seed": 3, **SMALL})
    assert response.status_code == 200
    assert Image.open(io.BytesIO(base64.b64decode(response.json()["images"][0]))).size == (64, 64)
    assert server.services.models.current is not None


def test_reload_loads_the_configured_checkpoint(server):
    assert server.post("/sdapi/v1/options", json={"sd_model_checkpoint": "other-sd1"}).status_code == 200
    server.post("/sdapi/v1/unload-checkpoint")
    assert server.services.models.current is None
    response = server.post("/sdapi/v1/reload-checkpoint")
    assert response.status_code == 200 and response.json() == {}
    assert server.services.models.current.info.model_name == "other-sd1"
    assert server.post("/sdapi/v1/options", json={"sd_model_checkpoint": "tiny-sd1"}).status_code == 200


def test_unload_waits_for_the_running_job(server):
    thread, result = start_long_job(server, "before-unload", steps=150)
    assert server.post("/sdapi/v1/unload-checkpoint").status_code == 200
    job = server.services.queue.get("before-unload")
    assert job.state == "done"                 # the job ran to its end: the unload queued behind it
    thread.join(60)
    assert result["response"].status_code == 200 and result["response"].json()["images"]
    assert server.services.models.current is None


def test_reload_without_any_checkpoint_says_where_to_put_one(tmp_path):
    services = services_module.create(cmd_args.parse_args(["--data-dir", str(tmp_path), "--nowebui"]))
    from webui import create_app

    with app_client(create_app(services)) as client:
        response = client.post("/sdapi/v1/reload-checkpoint")
        assert response.status_code == 409
        body = response.json()
        assert body["error"] == "ModelLoadError" and "Stable-diffusion" in body["detail"]
        assert client.post("/sdapi/v1/unload-checkpoint").json() == {}     # nothing loaded: still fine
    services.shutdown()


# ---------------------------------------------------------------- scripts

def test_scripts_and_script_info_agree(server):
    names = server.get("/sdapi/v1/scripts").json()
    assert names["img2img"][:4] == ["loopback", "outpainting mk2", "poor man's outpainting", "prompt matrix"]
    for mode in ("txt2img", "img2img"):   # dropdown scripts, then always-on ones (the example extension's)
        assert names[mode][-2:] == ["prompt suffix", "controlnet"]
    infos = server.get("/sdapi/v1/script-info").json()
    for mode, is_img2img in (("txt2img", False), ("img2img", True)):
        assert [info["name"] for info in infos if info["is_img2img"] is is_img2img] == names[mode]
    for info in infos:
        assert set(info) == {"name", "is_alwayson", "is_img2img", "args"}
        assert info["is_alwayson"] is (info["name"] in ("controlnet", "prompt suffix"))
        for arg in info["args"]:
            assert set(arg) == {"label", "value", "minimum", "maximum", "step", "choices"}


def test_script_info_defaults_are_valid_script_args(server):
    infos = {(info["name"], info["is_img2img"]): info for info in server.get("/sdapi/v1/script-info").json()}
    loopback = infos[("loopback", True)]["args"]
    assert [arg["label"] for arg in loopback] == ["Loops", "Final denoising strength", "Denoising strength curve",
                                                  "Append interrogated prompt at each iteration"]
    assert loopback[2]["choices"] == ["Aggressive", "Linear", "Lazy"]
    image = io.BytesIO()
    Image.new("RGB", (64, 64), "gray").save(image, format="PNG")
    response = server.post("/sdapi/v1/img2img", json={
        "init_images": [base64.b64encode(image.getvalue()).decode()], "prompt": "x", **SMALL,
        "script_name": "loopback", "script_args": [arg["value"] for arg in loopback]})
    assert response.status_code == 200, response.text

    units = infos[("controlnet", False)]["args"]
    assert len(units) == int(server.services.options.control_net_unit_count)
    response = server.post("/sdapi/v1/txt2img", json={
        "prompt": "x", **SMALL, "alwayson_scripts": {"controlnet": {"args": [units[0]["value"]]}}})
    assert response.status_code == 200, response.text


# ---------------------------------------------------------------- extensions and Real-ESRGAN models

def test_extensions_lists_the_folders_with_their_git_facts(server):
    folder = server.services.paths.extensions
    someone = git.Actor("someone", "someone@example.com")
    example = git.Repo.init(folder / "sd-webui-example", initial_branch="main")
    (folder / "sd-webui-example" / "README.md").write_text("x")
    example.index.add(["README.md"])
    commit = example.index.commit("first", author=someone, committer=someone)
    example.create_remote("origin", "https://someone:ghp_secret@github.com/someone/sd-webui-example.git")
    packed = git.Repo.init(folder / "packed-ext", initial_branch="dev")
    packed_commit = packed.index.commit("empty", author=someone, committer=someone)
    packed.git.pack_refs("--all")   # refs only in .git/packed-refs
    (folder / "copied-by-hand").mkdir()
    (folder / ".hidden").mkdir()
    (folder / "not-a-folder.txt").write_text("x")

    items = server.get("/sdapi/v1/extensions").json()
    builtin = server.services.paths.extensions_builtin
    builtin_names = {path.name for path in builtin.iterdir()} if builtin.is_dir() else set()
    items = [item for item in items if item["name"] not in builtin_names]
    assert [item["name"] for item in items] == ["copied-by-hand", "packed-ext", "sd-webui-example"]
    by_name = {item["name"]: item for item in items}
    assert by_name["sd-webui-example"] == {
        "name": "sd-webui-example", "remote": "https://github.com/someone/sd-webui-example.git", "branch": "main",
        "commit_hash": commit.hexsha, "version": commit.hexsha[:8], "commit_date": str(commit.committed_date),
        "enabled": True}
    assert (by_name["packed-ext"]["branch"], by_name["packed-ext"]["commit_hash"]) == ("dev", packed_commit.hexsha)
    assert by_name["copied-by-hand"]["remote"] == "" and by_name["copied-by-hand"]["commit_hash"] == ""
    assert "ghp_secret" not in json.dumps(items)


def test_realesrgan_models_are_the_files_in_models_realesrgan(server):
    models = server.services.paths.models
    (models / "RealESRGAN" / "RealESRGAN_x4plus.pth").write_bytes(b"")
    (models / "ESRGAN" / "4x-Other.pth").write_bytes(b"")
    items = server.get("/sdapi/v1/realesrgan-models").json()
    assert items == [{"name": "RealESRGAN_x4plus", "path": str(models / "RealESRGAN" / "RealESRGAN_x4plus.pth"),
                      "scale": None}]


# ---------------------------------------------------------------- server control and flags

def test_server_routes_answer_then_act(server):
    for route, text, call in (("server-stop", "Stopping.", "stop"), ("server-restart", "Restarting.", "restart"),
                              ("server-kill", "Killing.", "kill")):
        server.control.calls.clear()
        response = server.post(f"/sdapi/v1/{route}")
        assert (response.status_code, response.text) == (200, text)
        assert server.control.calls == [call]


def test_server_stop_ends_the_running_job_so_its_client_gets_an_answer(server):
    thread, result = start_long_job(server, "stopped-by-server-stop", steps=1000)
    assert server.post("/sdapi/v1/server-stop").status_code == 200
    thread.join(30)
    assert result["response"].status_code == 200
    job = server.services.queue.get("stopped-by-server-stop")
    assert job.state == "interrupted" and job.step < 1000


def test_server_routes_need_the_flag_and_the_api_auth(server):
    services = server.services
    from webui import create_app

    without_flag = dataclasses.replace(services, args=cmd_args.parse_args(["--nowebui"]))
    control = RecordingControl()
    with app_client(create_app(without_flag, control)) as client:
        for route in ("server-stop", "server-restart", "server-kill"):
            assert client.post(f"/sdapi/v1/{route}").status_code == 404
    with_auth = dataclasses.replace(services, args=cmd_args.parse_args(
        ["--nowebui", "--api-server-stop", "--api-auth", "user:pw"]))
    with app_client(create_app(with_auth, control)) as client:
        assert client.post("/sdapi/v1/server-stop").status_code == 401
        assert client.get("/internal/ping").status_code == 401
        assert client.get("/internal/ping", auth=("user", "pw")).json() == {}
        assert client.get("/sdapi/v1/script-info").status_code == 401
    assert control.calls == []


def test_new_flags(tmp_path, capsys):
    args = cmd_args.parse_args([])
    assert (args.timeout_keep_alive, args.api_server_stop, args.gradio_allowed_path) == (30, False, [])
    args = cmd_args.parse_args(["--timeout-keep-alive", "5", "--gradio-allowed-path", "/a", "--gradio-allowed-path",
                                "/b", "--cors-allow-origins-regex", "https://.*\\.example"])
    assert (args.timeout_keep_alive, args.gradio_allowed_path) == (5, ["/a", "/b"])
    with pytest.raises(SystemExit):
        cmd_args.parse_args(["--share"])
    assert "--share is not supported" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cmd_args.parse_args(["--gradio-auth-path", str(tmp_path / "missing.txt")])
    assert "missing.txt" in capsys.readouterr().err

    logins = tmp_path / "logins.txt"
    logins.write_text("ann:pw1\n\nbob:pw:2,cy:pw3\n")
    args = cmd_args.parse_args(["--gradio-auth", "me:secret", "--gradio-auth-path", str(logins)])
    assert cmd_args.gradio_credentials(args) == "me:secret,ann:pw1,bob:pw:2,cy:pw3"
    assert cmd_args.gradio_credentials(cmd_args.parse_args([])) == ""
    assert cmd_args.public_flags(args)["gradio_auth_path"] == "<hidden>"


# ---------------------------------------------------------------- the queue: order, progress, interrupt by id

def test_concurrent_txt2img_requests_run_in_submission_order(server):
    def call(index):
        return server.post("/sdapi/v1/txt2img", json={"prompt": "x", "seed": index, **SMALL,
                                                      "force_task_id": f"fifo-{index}"})

    with ThreadPoolExecutor(max_workers=10) as pool:
        futures = []
        for index in range(10):
            futures.append(pool.submit(call, index))
            time.sleep(0.2)                     # the order of submission is known
        responses = [future.result(timeout=120) for future in futures]
    assert [response.status_code for response in responses] == [200] * 10
    assert [json.loads(response.json()["info"])["seed"] for response in responses] == list(range(10))
    jobs = [server.services.queue.get(f"fifo-{index}") for index in range(10)]
    assert sorted(jobs, key=lambda job: job.created) == jobs          # queued in the order they were sent
    assert sorted(jobs, key=lambda job: job.started) == jobs          # and run first in, first out

    progress = server.get("/sdapi/v1/progress", params={"id": "fifo-0"}).json()
    assert (progress["status"], progress["progress"], progress["queue_position"]) == ("done", 1.0, -1)


def test_interrupt_with_a_wrong_id_stops_nothing(server):
    thread, result = start_long_job(server, "keeps-running", steps=40)
    assert server.post("/sdapi/v1/interrupt", params={"id": "no-such-job"}).json() == {"interrupted": False}
    thread.join(60)
    job = server.services.queue.get("keeps-running")
    assert result["response"].status_code == 200
    assert (job.state, job.interrupted, job.step) == ("done", False, 40)


# ---------------------------------------------------------------- a real process

def test_restart_runs_the_same_command_again_and_stop_ends_the_process(tmp_path):
    process = start_server(tmp_path, "--nowebui", "--api-server-stop", "--skip-load-model-at-start",
                           ready_path="/internal/ping")
    try:
        def post(route: str) -> str:
            request = urllib.request.Request(process.url + f"sdapi/v1/{route}", data=b"", method="POST")
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.read().decode()

        assert post("server-restart") == "Restarting."
        wait_until(lambda: "Restarting" in process.log(), timeout=30)
        process.wait_ready()                    # the same process (re-executed) answers again
        assert process.process.poll() is None and process.log().count("Starting on") == 2
        assert post("server-stop") == "Stopping."
        assert process.process.wait(timeout=60) == 0
    finally:
        process.stop()


def test_a_job_result_can_be_collected_again_by_id(server):
    response = server.post("/sdapi/v1/txt2img", json={"prompt": "x", "seed": 4, "width": 64, "height": 64,
                                                      "steps": 2, "force_task_id": "collect-me"})
    assert response.status_code == 200
    again = server.get("/sdapi/v1/jobs/collect-me")
    assert again.status_code == 200
    body = again.json()
    assert body["status"] == "done" and body["images"] == response.json()["images"]
    assert json.loads(body["info"])["seed"] == 4
    assert server.get("/sdapi/v1/jobs/nope").status_code == 404


def test_progress_and_interrupt_without_an_id_concern_the_callers_own_job(tmp_path):
    data = data_dir_with_checkpoints(tmp_path, {"tiny.safetensors": build_tiny_model("sd1")})
    services = services_module.create(cmd_args.parse_args(
        ["--data-dir", str(data), "--nowebui", "--api-auth", "ann:1,bob:2"]))
    from webui import create_app

    with app_client(create_app(services)) as client:
        def post(user, password, job_id, steps):
            return client.post("/sdapi/v1/txt2img", auth=(user, password), json={
                "prompt": "x", "seed": 1, "width": 64, "height": 64, "steps": steps, "force_task_id": job_id})

        with ThreadPoolExecutor(max_workers=2) as pool:
            ann = pool.submit(post, "ann", "1", "ann-job", 300)
            wait_until(lambda: (job := services.queue.get("ann-job")) is not None and job.step > 0)
            bob = pool.submit(post, "bob", "2", "bob-job", 2)
            wait_until(lambda: services.queue.get("bob-job") is not None)
            bobs = client.get("/sdapi/v1/progress", auth=("bob", "2")).json()
            assert bobs["id"] == "bob-job" and bobs["status"] == "queued" and bobs["queue_position"] == 1
            assert client.get("/sdapi/v1/progress", auth=("ann", "1")).json()["id"] == "ann-job"
            assert client.post("/sdapi/v1/interrupt", auth=("bob", "2")).json() == {"interrupted": True}
            assert bob.result().status_code == 409                       # bob's queued job was cancelled ...
            assert services.queue.get("ann-job").state == "running"      # ... and ann's goes on
            assert client.post("/sdapi/v1/interrupt", auth=("ann", "1")).json() == {"interrupted": True}
            assert ann.result().status_code == 200
    services.shutdown()


def test_extras_and_checkpoint_jobs_are_the_callers_own_too(tmp_path):
    """Not only generations: an API login's Extras or checkpoint job is its own, for calls without an id; and a
    login's running job comes before its queued ones (A1111 reports and stops what runs)."""
    data = data_dir_with_checkpoints(tmp_path, {"tiny.safetensors": build_tiny_model("sd1")})
    services = services_module.create(cmd_args.parse_args(
        ["--data-dir", str(data), "--nowebui", "--api-auth", "ann:1,bob:2"]))
    from webui import create_app

    ann, bob = ("ann", "1"), ("bob", "2")
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(buffer, format="PNG")
    picture = base64.b64encode(buffer.getvalue()).decode()
    with app_client(create_app(services)) as client, ThreadPoolExecutor(max_workers=3) as pool:
        long = pool.submit(client.post, "/sdapi/v1/txt2img", auth=bob, json={
            "prompt": "x", "seed": 1, "width": 64, "height": 64, "steps": 300, "force_task_id": "long"})
        wait_until(lambda: (job := services.queue.get("long")) is not None and job.step > 0)
        extras = pool.submit(client.post, "/sdapi/v1/extra-single-image", auth=ann,
                             json={"image": picture, "upscaling_resize": 2})
        wait_until(lambda: any(job.kind == "extras" for job in services.queue.pending()))
        queued = client.get("/sdapi/v1/progress", auth=ann).json()
        assert queued["state"]["job"] == "extras" and queued["status"] == "queued"
        assert client.post("/sdapi/v1/interrupt", auth=ann).json() == {"interrupted": True}
        assert extras.result().status_code == 409                        # ann's queued Extras job was cancelled
        assert services.queue.get("long").state == "running"             # ... bob's goes on
        unload = pool.submit(client.post, "/sdapi/v1/unload-checkpoint", auth=ann)
        wait_until(lambda: any(job.kind == "unload-model" for job in services.queue.pending()))
        assert client.get("/sdapi/v1/progress", auth=ann).json()["state"]["job"] == "unload-model"
        assert client.post("/sdapi/v1/interrupt", auth=ann).json() == {"interrupted": True}
        assert unload.result().status_code == 409
        # bob queues another job behind his running one: his calls without an id concern the running one
        more = pool.submit(client.post, "/sdapi/v1/txt2img", auth=bob, json={
            "prompt": "y", "seed": 2, "width": 64, "height": 64, "steps": 2, "force_task_id": "more"})
        wait_until(lambda: services.queue.get("more") is not None)
        assert client.get("/sdapi/v1/progress", auth=bob).json()["id"] == "long"
        assert client.post("/sdapi/v1/interrupt", auth=bob).json() == {"interrupted": True}
        assert long.result().status_code == 200 and services.queue.get("long").interrupted
        assert more.result().status_code == 200                          # the queued one then ran
    services.shutdown()


def test_several_api_users_never_see_or_take_each_others_jobs(tmp_path):
    data = data_dir_with_checkpoints(tmp_path, {"tiny.safetensors": build_tiny_model("sd1")})
    services = services_module.create(cmd_args.parse_args(
        ["--data-dir", str(data), "--nowebui", "--api-auth", "ann:1,bob:2"]))
    from webui import create_app

    ann, bob = ("ann", "1"), ("bob", "2")
    with app_client(create_app(services)) as client:
        def post(auth, job_id, steps, seed=1):
            return client.post("/sdapi/v1/txt2img", auth=auth, json={
                "prompt": f"{auth[0]}'s secret", "seed": seed, "width": 64, "height": 64, "steps": steps,
                "force_task_id": job_id})

        with ThreadPoolExecutor(max_workers=1) as pool:
            running = pool.submit(post, ann, "ann-job", 300)
            wait_until(lambda: (job := services.queue.get("ann-job")) is not None and job.step > 0)
            assert client.get("/sdapi/v1/progress", auth=bob).json()["id"] in ("", None)
            assert client.get("/sdapi/v1/progress", auth=bob, params={"id": "ann-job"}).status_code == 404
            assert client.get("/sdapi/v1/jobs/ann-job", auth=bob).status_code == 404
            assert client.post("/sdapi/v1/interrupt", auth=bob, params={"id": "ann-job"}).json() == {
                "interrupted": False}
            assert client.post("/sdapi/v1/interrupt", auth=bob).json() == {"interrupted": False}
            assert client.post("/sdapi/v1/skip", auth=bob).json() == {"skipped": False}
            assert services.queue.get("ann-job").state == "running"
            assert client.get("/sdapi/v1/progress", auth=ann).json()["id"] == "ann-job"
            assert client.post("/sdapi/v1/interrupt", auth=ann).json() == {"interrupted": True}
            assert running.result().status_code == 200
        taken = post(bob, "ann-job", 2)     # a finished job's id is not bob's to reuse
        assert taken.status_code == 409 and "force_task_id" in taken.text
        mine = client.get("/sdapi/v1/jobs/ann-job", auth=ann).json()
        assert mine["status"] == "interrupted" and "ann's secret" in mine["info"]
        assert post(ann, "ann-job", 2, seed=5).status_code == 200    # the owner may reuse it
    services.shutdown()


def test_a_job_id_in_use_is_refused(server):
    thread, result = start_long_job(server, "taken")
    again = server.post("/sdapi/v1/txt2img", json={"prompt": "x", **SMALL, "force_task_id": "taken"})
    assert again.status_code == 409 and "force_task_id" in again.json()["detail"]
    server.post("/sdapi/v1/interrupt", params={"id": "taken"})
    thread.join(60)
    assert result["response"].status_code == 200
    # once finished, the id may be used again
    assert server.post("/sdapi/v1/txt2img", json={"prompt": "x", **SMALL, "force_task_id": "taken"}).status_code == 200
