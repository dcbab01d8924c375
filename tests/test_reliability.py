"""Faults and load: full queue, concurrent clients, disk full, out of memory, a slow job and a fast /progress."""
from __future__ import annotations

import errno
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from modules import cmd_args, images, services as services_module
from modules.jobs import JobQueue, QueueFull
from tests.fixtures.app_client import app_client
from tests.fixtures.data_dirs import data_dir_with_checkpoints
from tests.fixtures.tiny_checkpoints import build_tiny_model

SMALL = {"width": 64, "height": 64, "steps": 2}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    data = data_dir_with_checkpoints(tmp_path_factory.mktemp("data"), {"tiny.safetensors": build_tiny_model("sd1")})
    services = services_module.create(cmd_args.parse_args(["--data-dir", str(data), "--nowebui"]))
    from webui import create_app

    with app_client(create_app(services)) as test_client:
        test_client.services = services
        yield test_client
    services.shutdown()


def test_queue_full_is_refused_not_unbounded():
    queue = JobQueue(max_waiting=2)
    release = threading.Event()
    queue.submit("block", lambda job: release.wait(30))
    time.sleep(0.1)                                     # the first job is now running, not waiting
    queue.submit("a", lambda job: None)
    queue.submit("b", lambda job: None)
    with pytest.raises(QueueFull):
        queue.submit("c", lambda job: None)
    release.set()
    queue.shutdown()


def test_queue_max_size_changed_through_the_api_applies_at_once(client):
    queue = client.services.queue
    release = threading.Event()
    try:
        assert client.post("/sdapi/v1/options", json={"queue_max_size": 1}).status_code == 200
        running = queue.submit("block", lambda job: release.wait(30))
        deadline = time.time() + 10
        while running.state != "running" and time.time() < deadline:
            time.sleep(0.01)
        queue.submit("waiting", lambda job: None)
        refused = client.post("/sdapi/v1/txt2img", json={"prompt": "x", **SMALL})
        assert refused.status_code == 429 and "1 jobs waiting" in refused.text
        assert client.post("/sdapi/v1/options", json={"queue_max_size": 3}).status_code == 200
        queue.submit("accepted now", lambda job: None)
    finally:
        release.set()
        client.post("/sdapi/v1/options", json={"queue_max_size": 64})


def test_a_crashing_job_does_not_stop_the_worker():
    queue = JobQueue()
    bad = queue.submit("bad", lambda job: 1 / 0)
    good = queue.submit("good", lambda job: "fine")
    assert good.done.wait(10) and good.result == "fine"
    assert bad.state == "failed" and "ZeroDivisionError" in bad.error
    queue.shutdown()


def test_concurrent_clients_all_get_their_images(client):
    def call(seed):
        return client.post("/sdapi/v1/txt2img", json={"prompt": "x", "seed": seed, **SMALL})

    with ThreadPoolExecutor(max_workers=6) as pool:
        responses = list(pool.map(call, range(6)))
    assert [r.status_code for r in responses] == [200] * 6
    seeds = [int(r.json()["info"].split('"seed": ')[1].split(",")[0]) for r in responses]
    assert seeds == list(range(6))


def test_progress_answers_while_a_job_runs(client):
    services = client.services
    thread = threading.Thread(target=client.post, args=("/sdapi/v1/txt2img",),
                              kwargs={"json": {"prompt": "x", "seed": 1, "width": 64, "height": 64, "steps": 300,
                                               "force_task_id": "slow"}})
    thread.start()
    deadline = time.time() + 60
    while (services.queue.get("slow") is None or services.queue.get("slow").step == 0) and time.time() < deadline:
        time.sleep(0.02)
    durations = []
    for _ in range(10):
        for path in ("/sdapi/v1/progress", "/sdapi/v1/options"):
            started = time.perf_counter()
            assert client.get(path).status_code == 200
            durations.append(time.perf_counter() - started)
    # nothing waits for the job (A1111 blocks these behind its lock); the median meets the 100 ms,
    # the worst case is bounded loosely because the sampling thread competes for this machine's two cores
    print(f"progress/options while sampling: median {sorted(durations)[len(durations) // 2] * 1000:.1f} ms, "
          f"max {max(durations) * 1000:.1f} ms")
    assert sorted(durations)[len(durations) // 2] < 0.1 and max(durations) < 2
    client.post("/sdapi/v1/interrupt", params={"id": "slow"})
    thread.join(120)


# ---------------------------------------------------------------- interrupts land within seconds, wherever the job is

def start_job(client, job_id: str, **body) -> threading.Thread:
    thread = threading.Thread(target=client.post, args=("/sdapi/v1/txt2img",),
                              kwargs={"json": {"prompt": "x", "seed": 1, **body, "force_task_id": job_id}})
    thread.start()
    return thread


def running(client, job_id: str, textinfo: str = ""):
    """The job once it runs and its progress text starts with `textinfo`."""
    deadline = time.time() + 60
    while time.time() < deadline:
        job = client.services.queue.get(job_id)
        if job is not None and job.state == "running" and job.textinfo.startswith(textinfo):
            return job
        time.sleep(0.01)
    raise AssertionError(f"job {job_id} did not reach {textinfo!r}")


def assert_pings_within_a_second(client) -> None:
    started = time.perf_counter()
    assert client.get("/internal/ping").status_code == 200
    assert time.perf_counter() - started < 1


def interrupt_and_time(client, job) -> float:
    started = time.perf_counter()
    assert client.post("/sdapi/v1/interrupt", params={"id": job.id}).json() == {"interrupted": True}
    assert job.done.wait(60)
    return time.perf_counter() - started


def test_one_unet_call_at_the_largest_size_stops_within_seconds(client):
    """At 4 megapixels one self-attention of the tiny UNet took 30 s on this machine's CPU: the interrupt used to
    wait for the step (minutes). Stop points in every block and between slices of a long attention end it now."""
    thread = start_job(client, "huge", width=2048, height=2048, steps=2)
    job = running(client, "huge", "Batch")
    time.sleep(1.5)                         # well inside the first UNet call
    assert job.step == 0
    assert_pings_within_a_second(client)
    assert interrupt_and_time(client, job) < 5
    assert job.state == "interrupted"
    thread.join(30)


def test_an_interrupt_stops_prompt_encoding(client, monkeypatch):
    from modules.prompts import conditioning

    encode_chunk = conditioning.TextEncoder._encode_chunk

    def slow(self, chunk):
        time.sleep(0.05)
        return encode_chunk(self, chunk)

    monkeypatch.setattr(conditioning.TextEncoder, "_encode_chunk", slow)
    prompt = " BREAK ".join(f"word{i}" for i in range(140))        # 140 different chunks: 7 s at 50 ms each
    thread = start_job(client, "encoding", prompt=prompt, **SMALL)
    job = running(client, "encoding", "Encoding prompt")
    time.sleep(0.5)
    assert_pings_within_a_second(client)
    assert interrupt_and_time(client, job) < 1
    assert job.state == "interrupted" and job.result.images == []
    thread.join(30)


def test_an_interrupt_stops_between_and_parts(client):
    prompt = " AND ".join(f"a cat {i}" for i in range(32))       # 32 UNet calls for the cond half of each step
    thread = start_job(client, "parts", prompt=prompt, width=512, height=512, steps=3)
    job = running(client, "parts", "Batch")
    time.sleep(1)
    assert_pings_within_a_second(client)
    assert interrupt_and_time(client, job) < 2
    assert job.state == "interrupted"
    thread.join(30)


@pytest.mark.parametrize("prompt, cap", [
    ("<lora:tiny-lora:0.001>" * 200, "200 extra-network tags"),
    ("a BREAK " * 12_000, "12000 chunks"),
    (" AND ".join(["a"] * 400), "400 AND parts"),
    ("cat " * 15_000, "chunks of 75 tokens"),
])
def test_prompts_over_the_caps_are_422_at_once(client, prompt, cap):
    started = time.perf_counter()
    response = client.post("/sdapi/v1/txt2img", json={"prompt": prompt, **SMALL})
    assert time.perf_counter() - started < 5
    assert response.status_code == 422 and cap in response.text, response.text[:300]
    assert response.json()["detail"][0]["loc"] == ["body", "prompt"]
    assert client.post("/sdapi/v1/txt2img", json={"prompt": "x", **SMALL}).status_code == 200


def test_disk_full_fails_the_job_cleanly(client, monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(images.os, "replace", full_disk)
    outputs = client.services.paths.outputs
    before = set(outputs.rglob("*"))
    response = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "seed": 1, "save_images": True, **SMALL})
    assert response.status_code == 507 and "No space left" in response.json()["detail"]
    leftovers = [p for p in set(outputs.rglob("*")) - before if p.is_file()]
    assert leftovers == []                      # no partial image, no temp file
    monkeypatch.undo()
    assert client.post("/sdapi/v1/txt2img", json={"prompt": "x", "seed": 1, **SMALL}).status_code == 200


def test_out_of_memory_is_reported_and_the_next_job_runs(client, monkeypatch):
    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    client.post("/sdapi/v1/txt2img", json={"prompt": "x", "seed": 1, **SMALL})
    pipe_unet = client.services.models.current.pipeline.unet
    monkeypatch.setattr(pipe_unet, "forward", oom)
    response = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "seed": 1, **SMALL})
    assert response.status_code == 507 and "out of GPU memory" in response.json()["detail"]
    monkeypatch.undo()
    assert client.post("/sdapi/v1/txt2img", json={"prompt": "x", "seed": 1, **SMALL}).status_code == 200


def test_out_of_memory_frees_what_the_failed_job_held(client, monkeypatch):
    held = []

    def oom(*args, **kwargs):
        activations = torch.ones(256, 256)   # what a real UNet call would hold when CUDA runs out
        held.append(weakref.ref(activations))
        raise torch.OutOfMemoryError("CUDA out of memory")

    manager = client.services.models
    freed_at_release = []
    real_release = manager.release_memory

    def release_memory():   # where CUDA's cache is emptied: the failed job's tensors must be gone by then
        freed_at_release.append(bool(held) and held[0]() is None)
        real_release()

    client.post("/sdapi/v1/txt2img", json={"prompt": "x", "seed": 1, **SMALL})
    monkeypatch.setattr(manager.current.pipeline.unet, "forward", oom)
    monkeypatch.setattr(manager, "release_memory", release_memory)
    assert client.post("/sdapi/v1/txt2img", json={"prompt": "x", "seed": 1, **SMALL}).status_code == 507
    assert freed_at_release == [True]   # no reference kept alive through the exception's traceback


def test_vae_out_of_memory_is_retried_in_tiles(client, monkeypatch):
    client.post("/sdapi/v1/txt2img", json={"prompt": "x", "seed": 1, **SMALL})
    vae = client.services.models.current.pipeline.vae
    real_decode, tiling_seen = vae.decode, []

    def decode_once_out_of_memory(*args, **kwargs):
        tiling_seen.append(vae.use_tiling)
        if len(tiling_seen) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real_decode(*args, **kwargs)

    expected = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "seed": 2, **SMALL}).json()["images"]
    monkeypatch.setattr(vae, "decode", decode_once_out_of_memory)
    response = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "seed": 2, **SMALL})
    assert response.status_code == 200, response.text
    assert tiling_seen == [False, True] and vae.use_tiling is False   # tiled for the retry only
    # a 64x64 image fits in one tile, so the retry gives the same pixels
    assert response.json()["images"] == expected


def test_vae_out_of_memory_twice_fails_the_job_and_the_next_one_runs(client, monkeypatch):
    client.post("/sdapi/v1/txt2img", json={"prompt": "x", "seed": 1, **SMALL})
    vae = client.services.models.current.pipeline.vae

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(vae, "decode", oom)
    response = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "seed": 1, **SMALL})
    assert response.status_code == 507 and "out of GPU memory" in response.json()["detail"]
    assert vae.use_tiling is False
    monkeypatch.undo()
    assert client.post("/sdapi/v1/txt2img", json={"prompt": "x", "seed": 1, **SMALL}).status_code == 200


def test_corrupt_checkpoint_switch_keeps_the_server_and_model(client):
    folder = client.services.paths.checkpoints
    (folder / "corrupt.safetensors").write_bytes(b"\x40\x00\x00\x00\x00\x00\x00\x00{" + b"x" * 70)
    client.post("/sdapi/v1/refresh-checkpoints")
    before = client.get("/sdapi/v1/options").json()["sd_model_checkpoint"]
    response = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "corrupt"})
    assert response.status_code == 422 and "corrupt.safetensors" in response.json()["detail"]
    assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == before
    assert client.post("/sdapi/v1/txt2img", json={"prompt": "x", "seed": 1, **SMALL}).status_code == 200


def test_history_keeps_only_recent_results(monkeypatch):
    from modules import jobs

    monkeypatch.setattr(jobs, "RESULT_GRACE_SECONDS", 0.0)
    queue = JobQueue(kept_results=2)
    done = [queue.submit("x", lambda job, n=n: f"images of {n}") for n in range(5)]
    assert done[-1].done.wait(10)
    time.sleep(0.05)
    assert [job.result for job in done] == [None, None, None, "images of 3", "images of 4"]
    assert all(queue.get(job.id).state == "done" for job in done)   # the record stays, only the images go
    queue.shutdown()


def test_waiters_hear_of_a_job_ending_at_once_and_a_failing_one_harms_nothing():
    """API requests wait for their job through when_done (no polling interval added to each answer)."""
    queue = JobQueue()
    release = threading.Event()
    try:
        job = queue.submit("txt2img", lambda job: release.wait(30))
        heard = []

        def broken():
            raise RuntimeError("a waiter went away")

        job.when_done(broken)
        job.when_done(lambda: heard.append(time.perf_counter()))
        assert heard == []
        release.set()
        ended = time.perf_counter()
        assert job.done.wait(30) and job.state == "done"
        while not heard and time.perf_counter() - ended < 5:   # the callbacks run just after `done` is set
            time.sleep(0.001)
        assert len(heard) == 1 and heard[0] - ended < 1.0
        job.when_done(lambda: heard.append("late"))   # after the end: called at once
        assert heard[-1] == "late"
        assert queue.submit("txt2img", lambda job: "next").done.wait(30)   # the worker carried on
    finally:
        release.set()
        queue.shutdown()


def test_a_body_that_stops_arriving_is_given_up_and_the_server_answers_meanwhile(tmp_path, monkeypatch):
    """300 half-sent requests used to be held open for as long as their senders liked."""
    import socket

    import uvicorn

    from modules.api import middleware
    from webui import create_app

    monkeypatch.setattr(middleware, "BODY_IDLE_SECONDS", 1)
    services = services_module.create(cmd_args.parse_args(["--data-dir", str(tmp_path), "--nowebui",
                                                           "--skip-load-model-at-start"]))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(services), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 30
        while not server.started and time.time() < deadline:
            time.sleep(0.05)
        stalled = []
        for _ in range(20):
            connection = socket.create_connection(("127.0.0.1", port), timeout=10)
            connection.sendall(b"POST /sdapi/v1/png-info HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
                               b"\r\nContent-Length: 1000\r\n\r\n{\"image\": \"")
            stalled.append(connection)
        started = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as other:
            other.sendall(b"GET /internal/ping HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            assert other.recv(100).startswith(b"HTTP/1.1 200")
        assert time.perf_counter() - started < 1
        for connection in stalled:
            answer = b""
            while b"stopped arriving" not in answer and (chunk := connection.recv(1000)):
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 408") and b"stopped arriving" in answer, answer[:300]
            connection.close()
    finally:
        server.should_exit = True
        thread.join(10)
        services.shutdown()
