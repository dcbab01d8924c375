"""Flags, folders and options as a user meets them on first start."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from modules import cmd_args, paths, services as services_module
from modules.options import Options


def test_a1111_flags_parse_and_defaults(monkeypatch):
    monkeypatch.setenv("COMMANDLINE_ARGS", "--api --use-cpu all")
    args = cmd_args.parse_args(["--port", "9000", "--ckpt", "x.safetensors", "--precision", "full"])
    assert (args.api, args.use_cpu, args.port, args.ckpt, args.precision) == (True, ["all"], 9000, "x.safetensors",
                                                                             "full")
    monkeypatch.delenv("COMMANDLINE_ARGS")
    assert cmd_args.parse_args([]).port == 7860
    assert cmd_args.parse_args(["--nowebui"]).port == 7861
    for flag in ("--listen", "--skip-install", "--no-half", "--xformers", "--opt-sdp-attention",
                 "--no-download-sd-model", "--skip-load-model-at-start", "--skip-torch-cuda-test"):
        assert cmd_args.parse_args([flag])


def test_unknown_flags_are_an_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cmd_args.parse_args(["--no-such-flag"])
    assert exit_info.value.code == 2
    assert "--no-such-flag" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_launch_help_prints_the_flags_before_installing_anything(tmp_path, flag):
    venv = tmp_path / "venv"
    env = dict(os.environ, VENV_DIR=str(venv))
    env.pop("LAUNCH_NO_VENV", None)
    try:
        shown = subprocess.run([sys.executable, "launch.py", flag], cwd=Path(__file__).resolve().parent.parent,
                               env=env, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("launch.py --help was still running after 30 s (installing?)")
    assert shown.returncode == 0, shown.stderr
    assert "--listen" in shown.stdout and "--api-auth" in shown.stdout and "--run-tests" in shown.stdout
    assert "[launch]" not in shown.stdout + shown.stderr and not venv.exists()



def _launch(*args: str, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "launch.py", *args], cwd=Path(__file__).resolve().parent.parent, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_launch_help_in_commandline_args_and_the_environment_it_documents(tmp_path):
    venv = tmp_path / "venv"
    env = dict(os.environ, VENV_DIR=str(venv), COMMANDLINE_ARGS="--api --help")
    env.pop("LAUNCH_NO_VENV", None)
    shown = _launch(env=env, timeout=30)
    assert shown.returncode == 0, shown.stderr
    assert "--listen" in shown.stdout and not venv.exists()
    for name in ("LAUNCH_NO_VENV", "VENV_DIR", "COMMANDLINE_ARGS"):
        assert name in shown.stdout
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert "LAUNCH_NO_VENV" in readme


def test_skip_install_with_an_incomplete_venv_runs_in_a_python_that_has_the_requirements(tmp_path):
    """A ./venv created but never installed into (an interrupted first run): --skip-install does not enter it and
    fail on imports; this Python, which has the requirements, runs the web UI (here up to its flag parsing)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    env = dict(os.environ, VENV_DIR=str(venv))
    env.pop("LAUNCH_NO_VENV", None)
    env.pop("COMMANDLINE_ARGS", None)
    ran = _launch("--skip-install", "--no-such-flag", env=env)
    output = ran.stdout + ran.stderr
    assert "is missing or incomplete; --skip-install: running in this Python" in output, output
    assert ran.returncode == 2 and "--no-such-flag" in ran.stderr, output    # webui.py's own parser answered
    assert "ModuleNotFoundError" not in output and "[launch] installing" not in output


def test_skip_install_without_the_requirements_anywhere_says_what_to_do(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    bare = venv / "bin" / "python"     # a Python without the requirements runs launch.py itself
    env = dict(os.environ, VENV_DIR=str(tmp_path / "other-venv"))
    env.pop("LAUNCH_NO_VENV", None)
    ran = subprocess.run([str(bare), "launch.py", "--skip-install"], cwd=Path(__file__).resolve().parent.parent,
                         env=env, capture_output=True, text=True, timeout=60)
    assert ran.returncode != 0
    assert "run launch.py once without --skip-install" in ran.stderr and "Traceback" not in ran.stderr, ran.stderr


def test_a_start_removes_the_temporary_files_an_interrupted_write_left(tmp_path):
    """kill -9 while an image, a setting, a merge or an extension install was being written leaves its temporary
    file; the next start removes exactly those, and nothing of the user's."""
    ours = [tmp_path / "outputs" / "txt2img-images" / "2026-12-06" / ".0123456789abcdef.tmp",
            tmp_path / ".config-k3j_x9a2.tmp", tmp_path / ".cache-0a1b2c3d.tmp",
            tmp_path / "models" / "Stable-diffusion" / ".merging-abcd1234.tmp",
            tmp_path / "models" / "Stable-diffusion" / ".merged-zz99yy88.tmp",
            tmp_path / "models" / "Lora" / "sub" / ".style-abcd1234.tmp"]
    theirs = [tmp_path / "outputs" / "txt2img-images" / "keep.tmp", tmp_path / "models" / "Lora" / "notes.tmp",
              tmp_path / "models" / "Lora" / ".hidden.txt", tmp_path / ".bashrc",
              tmp_path / "outputs" / ".0123456789abcdef.tmp.png"]
    for path in ours + theirs:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half a file")
    install = tmp_path / "extensions" / ".tmp-q1w2e3r4"
    (install / ".git").mkdir(parents=True)
    user_extension = tmp_path / "extensions" / "my-extension"
    user_extension.mkdir()
    services = services_module.create(cmd_args.parse_args(["--data-dir", str(tmp_path)]))
    services.shutdown()
    assert [path for path in ours if path.exists()] == [] and not install.exists()
    assert all(path.exists() for path in theirs) and user_extension.is_dir()


def test_secrets_never_shown():
    args = cmd_args.parse_args(["--api-auth", "u:hunter2", "--gradio-auth", "a:b"])
    shown = json.dumps(cmd_args.public_flags(args))
    assert "hunter2" not in shown and "a:b" not in shown
    assert cmd_args.public_flags(args)["api_auth"] == "<hidden>"


def test_first_start_creates_the_folders_users_expect(tmp_path):
    services = services_module.create(cmd_args.parse_args(["--data-dir", str(tmp_path)]))
    try:
        for name in paths.MODEL_FOLDERS:
            readme = tmp_path / "models" / name / "README.md"
            assert readme.is_file() and readme.read_text().strip()
        assert (tmp_path / "outputs").is_dir() and (tmp_path / "embeddings" / "README.md").is_file()
        assert services.registry.items() == []
    finally:
        services.shutdown()


def test_models_dir_and_ckpt_dir_flags(tmp_path):
    args = cmd_args.parse_args(["--data-dir", str(tmp_path / "data"), "--models-dir", str(tmp_path / "m"),
                                "--ckpt-dir", str(tmp_path / "ckpts")])
    where = paths.from_args(args)
    assert where.checkpoints == tmp_path / "ckpts" and where.lora == tmp_path / "m" / "Lora"
    assert where.outputs == tmp_path / "data" / "outputs"


def test_options_persist_and_validate(tmp_path):
    options = Options(tmp_path / "config.json")
    options.update({"CLIP_stop_at_last_layers": 2, "samples_format": "webp"})
    assert Options(tmp_path / "config.json").CLIP_stop_at_last_layers == 2
    with pytest.raises(ValueError, match="CLIP_stop_at_last_layers"):
        options.update({"CLIP_stop_at_last_layers": float("nan")})
    with pytest.raises(ValueError, match="outdir_txt2img_samples"):
        options.update({"outdir_txt2img_samples": "/etc"}, from_api=True)
    with pytest.raises(ValueError, match="frozen"):
        Options(tmp_path / "config.json", frozen=True).update({"samples_format": "png"})
    (tmp_path / "broken.json").write_text("{not json")
    assert Options(tmp_path / "broken.json").samples_format == "png"     # a damaged file falls back to defaults


@pytest.mark.parametrize("flags, expected", [
    ([], []),
    (["--listen"], ["the UI has no --gradio-auth"]),
    (["--listen", "--api"], ["the API (/sdapi/v1) has no --api-auth", "the UI has no --gradio-auth"]),
    (["--listen", "--nowebui", "--api-auth", "a:b"], []),
    (["--server-name", "example.lan", "--gradio-auth", "a:b", "--api"], ["the API (/sdapi/v1) has no --api-auth"]),
])
def test_a_reachable_server_without_passwords_warns_loudly(flags, expected):
    from webui import exposure_warnings

    warnings = exposure_warnings(cmd_args.parse_args(flags))
    assert len(warnings) == len(expected)
    for warning, part in zip(warnings, expected):
        assert part in warning and "WARNING" in warning and "anyone" in warning


def test_the_first_page_does_not_wait_for_diffusers(tmp_path):
    """diffusers, transformers and peft take seconds to import (5 of the 15 s a start took when the ControlNet
    registry imported diffusers): they come with the first model load, on the worker, not before the server
    answers. Building the services and loading the scripts, as a start with no checkpoint does, imports none."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, webui; from modules import cmd_args, services; "
            f"s = services.create(cmd_args.parse_args(['--data-dir', {str(tmp_path)!r}, '--api'])); "
            "s.load_initial_model(); s.load_scripts(); "
            "print([m for m in ('diffusers', 'transformers', 'peft', 'accelerate') if m in sys.modules]); "
            "s.shutdown()")
    result = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
