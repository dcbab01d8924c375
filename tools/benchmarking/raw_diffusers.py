"""The raw diffusers baseline of a mode: the same file as a diffusers pipeline called directly (fp16 + SDPA), with
the mode's offload, torch.compile or ToMe as diffusers' own guides apply them."""
from __future__ import annotations

import time

from .cases import PROMPT
from .measuring import compiled_graphs, host_syncs_per_step, measure_steps, synchronize, timed


def worker_raw(spec: dict) -> dict:
    """Raw diffusers: the same file built into a diffusers pipeline the way our loader does (meta-device modules,
    weights assigned), called directly with fp16 + SDPA, and the mode's diffusers switch."""
    import torch
    from diffusers import EulerDiscreteScheduler

    from modules.models import detect, files, loader

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.float16 if cuda else torch.float32
    mode, size, steps = spec["mode"], spec["size"], spec["steps"]
    result: dict = {}
    started = time.perf_counter()
    state_dict = files.load_state_dict(spec["checkpoint"])
    model_spec = detect.detect(state_dict)
    components = loader.build_components(state_dict, model_spec, dtype, dtype)
    del state_dict
    scheduler = EulerDiscreteScheduler.from_config(loader.scheduler_config(model_spec))   # diffusers' own Euler
    pipe = loader.build_pipeline(components, model_spec, scheduler)
    pipe.set_progress_bar_config(disable=True)
    if mode == "medvram":
        pipe.enable_model_cpu_offload(device=device)
    elif mode == "lowvram":
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        pipe.to(device)
    if mode == "channelslast":
        pipe.unet.to(memory_format=torch.channels_last)
    if spec.get("token_merging"):
        import tomesd

        tomesd.apply_patch(pipe, ratio=spec["token_merging"])
    if mode.startswith("compiled"):
        # As diffusers' "Accelerate inference" guide does: channels-last UNet, torch.compile(fullgraph=True);
        # --raw-compile docs adds its inductor flags and max-autotune (much longer to compile).
        if spec.get("raw_compile") == "docs":
            import torch._inductor.config as inductor

            inductor.conv_1x1_as_mm = True
            inductor.coordinate_descent_tuning = True
            inductor.epilogue_fusion = False
            inductor.coordinate_descent_check_all_directions = True
        compile_mode = spec.get("raw_compile_mode") or ("max-autotune" if spec.get("raw_compile") == "docs" else None)
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.unet = torch.compile(pipe.unet, mode=compile_mode, fullgraph=True)
        if spec.get("compile_vae"):
            pipe.vae.decode = torch.compile(pipe.vae.decode, mode=compile_mode, fullgraph=True)
    synchronize()
    result["load_s"] = time.perf_counter() - started

    def generate(count):
        return pipe(prompt=PROMPT, negative_prompt="", num_inference_steps=count, guidance_scale=7.0, height=size,
                    width=size, generator=torch.Generator("cpu").manual_seed(1), output_type="pil").images[0]

    result["first_image_s"], _ = timed(lambda: generate(steps))
    result["first_image_wall"] = time.time()   # the parent subtracts the moment it started this process
    measured = measure_steps(generate, steps, spec["repeats"], spec.get("its_steps"), spec.get("warm_up", True))
    measured.pop("last")
    result.update(measured)
    if mode.startswith("compiled"):
        result["graphs"] = compiled_graphs()
    if cuda and mode != "lowvram":
        result["syncs_per_step"] = host_syncs_per_step(generate, result["its_steps"])
    return result
