"""Live previews: TAESD decoders from models/VAE-taesd (either layout, read safely), full-size previews while
sampling, and the latent approximation when the file is missing or unusable."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import safetensors.torch
import torch

from modules import cmd_args, services as services_module
from modules.diffusion import previews
from modules.jobs import Job
from modules.generation.request import validate_request
from modules.models import families
from tests.fixtures.data_dirs import data_dir_with_checkpoints
from tests.fixtures.tiny_checkpoints import build_tiny_model, write_malicious_pickle


def random_decoder(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    decoder = previews.new_decoder()
    for parameter in decoder.parameters():
        torch.nn.init.normal_(parameter, std=0.05)
    return decoder.eval()


def original_layout(decoder) -> dict:
    """madebyollin's taesd_decoder.pth: an nn.Sequential whose index 0 is the parameterless Clamp."""
    return {f"{int(key.split('.')[1]) + 1}.{key.split('.', 2)[2]}": value.clone()
            for key, value in decoder.state_dict().items()}


LATENTS = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("layout", ["original .pth", "diffusers .safetensors"])
def test_taesd_decoder_files_decode_exactly_like_the_decoder(tmp_path, layout):
    decoder = random_decoder()
    if layout == "original .pth":
        torch.save(original_layout(decoder), tmp_path / "taesd_decoder.pth")
    else:
        safetensors.torch.save_file({f"decoder.{k}": v.contiguous() for k, v in decoder.state_dict().items()},
                                    str(tmp_path / "taesd_decoder.safetensors"))
    made = previews.Previews(tmp_path, torch.device("cpu"), torch.float32)
    image = made.image(LATENTS, families.SD1, "TAESD")
    assert image.size == (64, 64)   # full size: 8 pixels per latent
    with torch.no_grad():
        expected = decoder(LATENTS[:1])
    expected = ((expected[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    assert np.array_equal(np.asarray(image), expected)
    assert made.decoder(families.SDXL) is None   # no taesdxl_decoder: SDXL previews fall back


def test_missing_broken_or_malicious_files_fall_back_to_the_approximation(tmp_path):
    approx = previews.latent_preview(LATENTS[0], families.SD1)
    assert approx.size == (8, 8)
    assert np.array_equal(np.asarray(previews.Previews(tmp_path, torch.device("cpu"), torch.float32)
                                     .image(LATENTS, families.SD1, "TAESD")), np.asarray(approx))
    (tmp_path / "taesd_decoder.pth").write_bytes(b"not a model at all")
    marker = tmp_path / "pwned"
    write_malicious_pickle(tmp_path / "taesdxl_decoder.pth", marker)
    made = previews.Previews(tmp_path, torch.device("cpu"), torch.float32)
    assert made.image(LATENTS, families.SD1, "TAESD").size == (8, 8)
    assert made.image(LATENTS, families.SDXL, "TAESD").size == (8, 8)
    assert not marker.exists()   # the pickle's payload never ran
    # another model's weights under the right name are refused, not half-loaded
    safetensors.torch.save_file({"1.weight": torch.zeros(3, 3)}, str(tmp_path / "taesd_decoder.safetensors"))
    (tmp_path / "taesd_decoder.pth").unlink()
    assert previews.Previews(tmp_path, torch.device("cpu"), torch.float32).decoder(families.SD1) is None


def test_generation_shows_full_size_taesd_previews(tmp_path):
    data = data_dir_with_checkpoints(tmp_path, {"tiny-sd1.safetensors": build_tiny_model("sd1")})
    (data / "models" / "VAE-taesd").mkdir(parents=True)
    torch.save(original_layout(random_decoder()), data / "models" / "VAE-taesd" / "taesd_decoder.pth")
    services = services_module.create(cmd_args.parse_args(["--data-dir", str(data)]))
    try:
        services.options.update({"show_progress_every_n_steps": 1}, from_api=False)

        def run(method: str):
            services.options.update({"show_progress_type": method}, from_api=False)
            request = validate_request({"prompt": "x", "steps": 2, "width": 64, "height": 64, "seed": 1,
                                        "save_images": False}, services.registry)
            job = services.submit_txt2img(request)
            assert job.done.wait(300) and job.state == "done", job.error
            return job.preview.size   # the last step's preview, as the UI last showed it

        assert run("TAESD") == (64, 64)
        assert run("Approx cheap") == (8, 8)
        assert run("Full") == (64, 64)
    finally:
        services.shutdown()


def test_previews_are_decoded_only_when_somebody_looks_and_show_their_step(tmp_path):
    """The sampler leaves each step's latents; the TAESD decode runs in the thread that asks (no GPU wait in the
    sampling loop), once per preview, and shows that step even when asked for after later steps ran."""
    data = data_dir_with_checkpoints(tmp_path, {"tiny-sd1.safetensors": build_tiny_model("sd1")})
    (data / "models" / "VAE-taesd").mkdir(parents=True)
    torch.save(original_layout(random_decoder()), data / "models" / "VAE-taesd" / "taesd_decoder.pth")
    services = services_module.create(cmd_args.parse_args(["--data-dir", str(data)]))
    try:
        services.options.update({"show_progress_every_n_steps": 1, "show_progress_type": "TAESD"}, from_api=False)
        decoder = services.generator.previews.decoder(families.SD1)
        decoded_in = []
        decoder.register_forward_hook(lambda *_: decoded_in.append(threading.current_thread().name))
        seen = {}
        original_set_preview = Job.set_preview

        def keep_each(job, preview):   # every preview the sampler left, in order
            seen[len(seen)] = preview
            original_set_preview(job, preview)

        request = validate_request({"prompt": "x", "steps": 3, "width": 64, "height": 64, "seed": 1,
                                    "save_images": False}, services.registry)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(Job, "set_preview", keep_each)
            job = services.submit_txt2img(request)
            assert job.done.wait(300) and job.state == "done", job.error
        assert len(seen) == 3 and decoded_in == []            # three steps, three previews, none decoded yet
        first = seen[0].get()
        assert first.size == (64, 64) and decoded_in == ["MainThread"]
        assert seen[0].get() is first and len(decoded_in) == 1   # made once
        last = job.preview
        assert last is seen[2].get() and len(decoded_in) == 2
        assert not np.array_equal(np.asarray(first), np.asarray(last))   # the first step's picture, not the last's
    finally:
        services.shutdown()


def test_a_failing_preview_fails_no_request():
    from modules.jobs import Deferred

    def broken():
        raise RuntimeError("decoder went away")

    job = Job(id="j", kind="txt2img", run=lambda job: None)
    job.set_preview(Deferred(broken))
    assert job.preview is None and job.preview_id == 1


def test_the_ui_progress_watcher_shows_a_deferred_preview_made_off_the_event_loop():
    import asyncio

    from PIL import Image

    from modules.jobs import Deferred, JobQueue
    from modules.ui import progress

    made_in = []

    def make():
        made_in.append(threading.current_thread().name)
        return Image.new("RGB", (8, 8), "red")

    queue = JobQueue()
    release = threading.Event()
    try:
        job = queue.submit("txt2img", lambda job: (job.set_progress(1, 4), job.set_preview(Deferred(make)),
                                                   release.wait(30)))

        async def first_preview():
            async for snapshot in progress.watch(job, queue, interval=0.01):
                if snapshot.preview is not None:
                    return snapshot.preview, threading.current_thread().name

        image, loop_thread = asyncio.run(asyncio.wait_for(first_preview(), 30))
        assert image.size == (8, 8) and made_in and made_in[0] != loop_thread
    finally:
        release.set()
        queue.shutdown()
