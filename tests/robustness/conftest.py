"""The server the robustness tests drive, built once for all of them (package scope): the API alone on a data
folder with a tiny SD1 checkpoint (loaded) and a malicious pickle beside it, and a folder outside the data folder
that no name from a request may ever reach."""
from __future__ import annotations

from pathlib import Path

import pytest

from modules import cmd_args, services as services_module
from tests.fixtures.app_client import app_client
from tests.fixtures.data_dirs import data_dir_with_checkpoints
from tests.fixtures.tiny_checkpoints import build_tiny_model, write_malicious_pickle, write_safetensors


@pytest.fixture(scope="package")
def base(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("robust")


@pytest.fixture(scope="package")
def outside(base) -> Path:
    """A folder beside the data folder, so `../../../outside` from a model folder reaches it: nothing in it may
    ever be opened through a name from a request. It holds a real checkpoint, and the marker a pickle would write."""
    folder = base / "outside"
    folder.mkdir()
    write_safetensors(build_tiny_model("sd1", seed=5), folder / "secret.safetensors")
    return folder


@pytest.fixture(scope="package")
def server(base, outside):
    data = data_dir_with_checkpoints(base / "data", {"tiny-sd1.safetensors": build_tiny_model("sd1")})
    write_malicious_pickle(data / "models" / "Stable-diffusion" / "zz-evil.ckpt", outside / "pwned")
    services = services_module.create(cmd_args.parse_args(["--data-dir", str(data), "--api", "--nowebui"]))
    from webui import create_app

    with app_client(create_app(services)) as client:
        client.services = services
        client.data = data
        assert client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "tiny-sd1"}).status_code == 200
        yield client
    services.shutdown()
