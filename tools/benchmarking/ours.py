"""Our side of a mode: the txt2img API in-process, with the mode's flags and settings."""
from __future__ import annotations

import base64
from pathlib import Path

from .cases import txt2img_payload
from .measuring import (compiled_graphs, cuda_available, host_syncs_per_step, measure_steps, pixel_difference,
                        timed)


def our_args(spec: dict) -> list[str]:
    return ["--data-dir", spec["data_dir"], "--ckpt-dir", spec["ckpt_dir"], "--ui-settings-file",
            spec["settings_file"], "--lora-dir", spec["lora_dir"], "--api", "--nowebui", *spec["flags"]]


def worker_ours(spec: dict) -> dict:
    """Our side: the txt2img API in-process (FastAPI's TestClient), with the mode's flags and settings."""
    from fastapi.testclient import TestClient

    from modules import cmd_args, services as services_module
    from webui import create_app

    services = services_module.create(cmd_args.parse_args(our_args(spec)))
    name, size, steps = spec["checkpoint_name"], spec["size"], spec["steps"]
    result: dict = {}
    try:
        with TestClient(create_app(services), base_url="http://127.0.0.1:7860") as client:   # a name it answers to
            took, job = timed(lambda: services.switch_model(name))
            if job.state != "done":
                raise RuntimeError(f"loading {name} failed: {job.error}")
            result["load_s"] = took

            def generate(count):
                response = client.post("/sdapi/v1/txt2img", json=txt2img_payload(name, size, count))
                if response.status_code != 200:
                    raise RuntimeError(f"txt2img answered {response.status_code}: {response.text[:300]}")
                return response.json()["images"][0]

            result["first_image_s"], image = timed(lambda: generate(steps))
            if spec.get("save_image"):
                Path(spec["save_image"]).write_bytes(base64.b64decode(image))
            if spec.get("reference_only"):
                return result
            measured = measure_steps(generate, steps, spec["repeats"], spec.get("its_steps"), spec.get("warm_up", True))
            image = measured.pop("last")
            result.update(measured)
            if spec.get("save_image"):
                Path(spec["save_image"]).write_bytes(base64.b64decode(image))
            if spec.get("reference"):
                difference = pixel_difference(image, Path(spec["reference"]))
                if difference is not None:
                    result["px_max"], result["px_mean"] = difference
            if spec["mode"].startswith("compiled"):
                result["graphs"] = compiled_graphs()
            if cuda_available() and spec["mode"] != "lowvram":   # there every layer's weights are a blocking copy
                result["syncs_per_step"] = host_syncs_per_step(generate, result["its_steps"])
    finally:
        services.shutdown()
    return result
