"""The figures besides the modes, in the default mode and in this process: the cost of three LoRAs, prompt
encoding, a cold checkpoint load and a cached switch, and start-up to the UI's first answer."""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from .cases import Case, txt2img_payload
from .checkpoints import checkpoint_path, prepare_checkpoint
from .measuring import cuda_available, interleaved, seconds
from .servers import bench_startup


def bench_loras(client, name: str, size: int, steps: int, loras: list[str], repeats: int) -> tuple[float, float]:
    """A job with three LoRAs (applied and removed within the job) against the same job without."""
    plain = txt2img_payload(name, size, steps)
    tags = " ".join(f"<lora:{lora}:0.5>" for lora in loras)
    with_loras = txt2img_payload(name, size, steps, f"{plain['prompt']} {tags}")

    def run(payload):
        response = client.post("/sdapi/v1/txt2img", json=payload)
        assert response.status_code == 200, response.text
        assert not json.loads(response.json()["info"]).get("warnings"), response.json()["info"]

    run(with_loras)   # warm-up: the files are read once and kept in the LoRA cache
    return interleaved(lambda: run(plain), lambda: run(with_loras), repeats)


def bench_prompt_encoding(services, repeats: int) -> tuple[int, float]:
    """Encoding a ~300-token prompt with emphasis and prompt editing (every scheduled variant) for 20 steps."""
    from modules.prompts import chunks, conditioning

    words = ", ".join(f"(detail {i}:1.1)" if i % 3 else f"[red {i}:blue {i}:0.5]" for i in range(78))
    model = services.models.current
    tokens = chunks.token_count(words)[0]

    def encode():
        encoder = conditioning.TextEncoder(model.pipeline, model.family)
        conditioning.schedule(encoder, words, "blurry, lowres", 20)

    encode()
    return tokens, statistics.median(seconds(encode) for _ in range(repeats))


def bench_switching(services, first: str, second: str) -> tuple[float, float]:
    services.models.unload_all()
    started = time.perf_counter()
    services.switch_model(first)
    cold = time.perf_counter() - started
    services.switch_model(second)
    started = time.perf_counter()
    job = services.switch_model(first)
    cached = time.perf_counter() - started
    assert job.state == "done", job.error
    return cold, cached


def bench_extras(cases: list[Case], work: Path, options, run: dict) -> list[dict]:
    """LoRA cost, prompt encoding, cold load and cached switch, start-up: the default mode, in this process."""
    from fastapi.testclient import TestClient

    from modules import cmd_args, services as services_module
    from webui import create_app

    cases = list(cases)
    if len(cases) == 1 and not cases[0].variant:   # a second small model to switch to
        cases.append(Case("tiny-b", "tiny SD1 (second)", None, cases[0].size, None))
        prepare_checkpoint(work, cases[1], seed=1)
    kind = "gpu" if cuda_available() else "cpu"
    records = []

    def add(case: Case | None, measure: str, value, target: str = "", met=None, digits: int = 3):
        records.append({"table": "extras", "kind": kind, "run": run, "model": case.key if case else "",
                        "model_label": case.label if case else "", "measure": measure, "value": value,
                        "target": target, "met": met, "digits": digits})

    data = work / "data-extras"
    args = ["--data-dir", str(data), "--ckpt-dir", str(work / "checkpoints"), "--lora-dir", str(work / "loras")]
    services = services_module.create(cmd_args.parse_args([*args, "--api", "--nowebui"]))
    # Names as the registry lists them: relative to --ckpt-dir, each model in its own sub-folder.
    names = {case.key: checkpoint_path(work, case.key).relative_to(work / "checkpoints").as_posix() for case in cases}
    try:
        with TestClient(create_app(services), base_url="http://127.0.0.1:7860") as client:   # a name it answers to
            for case in cases:
                if case.key == "tiny-b":   # only there to switch to
                    continue
                loras = [f"{case.key}-lora{i}" for i in range(3)]
                plain, with_loras = bench_loras(client, names[case.key], case.size, options.steps, loras,
                                                options.repeats)
                ratio = with_loras / plain
                add(case, f"{options.steps}-step job s, no LoRA", plain)
                add(case, f"{options.steps}-step job s, 3 LoRAs", with_loras)
                add(case, "3 LoRAs ÷ none", ratio, "< 1.10 on GPU", ratio < 1.10 if kind == "gpu" else None, 2)
                tokens, took = bench_prompt_encoding(services, options.repeats)
                add(case, f"prompt encoding s, {tokens} tokens, emphasis + editing, 20 steps", took)
            if len(cases) >= 2:
                cold, cached = bench_switching(services, names[cases[0].key], names[cases[1].key])
                add(None, f"cold checkpoint load s ({cases[0].key})", cold)
                add(None, "cached checkpoint switch s", cached, "< 1", cached < 1)
    finally:
        services.shutdown()
    startup = bench_startup(args)
    add(None, "s from server start (with the UI) to first HTTP 200 on /", startup, "< 10", startup < 10)
    return records
