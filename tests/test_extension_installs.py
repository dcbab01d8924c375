"""Extensions' installs cannot replace the core's packages (modules/addons/pip_constraints.py): the constraints
file pins the core's installed versions; launch.run_pip and a plain pip subprocess started by an install.py run
against it; a refused install is reported with the extension's name in the Extensions tab and the log.

pip is a stand-in (a `pip` package first on PYTHONPATH) that records its argv and PIP_CONSTRAINT and fails as
pip does on a conflict with a constraint; one test runs the real pip with --no-index --dry-run (nothing is
downloaded or installed)."""
from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from modules import paths as paths_module
from modules.addons import extensions, pip_constraints, script_loading
from modules.cmd_args import parse_args
from modules.options import Options
from modules.paths import PROJECT_ROOT
from modules.ui import extensions as tab

FAKE_PIP = r'''
"""Stand-in pip: records argv and PIP_CONSTRAINT; refuses a requirement that differs from a constraint."""
import json, os, re, sys
from pathlib import Path

args = sys.argv[1:]
files = os.environ.get("PIP_CONSTRAINT", "").split()
files += [args[i + 1] for i, word in enumerate(args[:-1]) if word in ("-c", "--constraint")]
pins = {}
for file in files:
    for line in Path(file).read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            pins[line.split("==")[0].strip().lower()] = line.strip()
wanted = []
skip = False
for i, word in enumerate(args):
    if skip:
        skip = False
        continue
    if word in ("-c", "--constraint", "-r", "--requirement"):
        skip = True
        if word in ("-r", "--requirement"):
            wanted += [line.strip() for line in Path(args[i + 1]).read_text().splitlines() if line.strip()]
        continue
    if not word.startswith("-") and word != "install":
        wanted.append(word)
log = Path(os.environ["FAKE_PIP_LOG"])
runs = json.loads(log.read_text()) if log.exists() else []
runs.append({"argv": args, "PIP_CONSTRAINT": os.environ.get("PIP_CONSTRAINT"), "pins": pins})
log.write_text(json.dumps(runs))
for requirement in wanted:
    name = re.match(r"[A-Za-z0-9._-]+", requirement).group(0).lower()
    if name in pins and requirement.replace(" ", "") not in (name, pins[name]):
        print(f"ERROR: Cannot install {requirement} because these package versions have conflicting dependencies.")
        print("\nThe conflict is caused by:")
        print(f"    The user requested {requirement}")
        print(f"    The user requested (constraint) {pins[name]}")
        print("\nTo fix this you could try to:\n1. loosen the range of package versions you've specified")
        print("\nERROR: ResolutionImpossible: for help visit https://pip.pypa.io/en/latest/topics/dependency-resolution/")
        sys.exit(1)
print("Successfully installed " + " ".join(wanted))
'''


@pytest.fixture
def fake_pip(tmp_path, monkeypatch) -> SimpleNamespace:
    """A folder to use as install.py's PYTHONPATH: `launch` (the real launch.py, linked) and a stand-in `pip`."""
    root = tmp_path / "pythonpath"
    (root / "pip").mkdir(parents=True)
    (root / "pip" / "__init__.py").write_text("")
    (root / "pip" / "__main__.py").write_text(FAKE_PIP)
    (root / "launch.py").symlink_to(PROJECT_ROOT / "launch.py")
    log = tmp_path / "pip-runs.json"
    monkeypatch.setenv("FAKE_PIP_LOG", str(log))
    monkeypatch.delenv("PIP_CONSTRAINT", raising=False)
    return SimpleNamespace(root=root, runs=lambda: json.loads(log.read_text()) if log.exists() else [])


def make_services(tmp_path) -> SimpleNamespace:
    args = parse_args(["--data-dir", str(tmp_path / "data")])
    paths = dataclasses.replace(paths_module.from_args(args), extensions_builtin=tmp_path / "builtin")
    paths.extensions.mkdir(parents=True, exist_ok=True)
    return SimpleNamespace(args=args, paths=paths, options=Options(paths.config_file),
                           scripts=SimpleNamespace(errors=[], failures=lambda: []))


def extension_with(services, name: str, install_py: str, **files: str) -> extensions.Extension:
    folder = services.paths.extensions / name
    folder.mkdir()
    (folder / "install.py").write_text(install_py)
    for file, text in files.items():
        (folder / file).write_text(text)
    return extensions.read_extension(folder)


def test_the_constraints_file_pins_the_cores_installed_versions(tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# a comment\ntorch>=2.10\ntransformers>=4.57  # why\n--extra-index-url https://x\n"
                            "pydantic>=2.5 ; python_version >= '3.10'\nnot-installed-package-xyz\n\n")
    assert pip_constraints.core_requirements(requirements) == ["torch", "transformers", "pydantic",
                                                                "not-installed-package-xyz"]
    path = pip_constraints.write_constraints(tmp_path, requirements)
    lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    assert lines == [f"{name}=={importlib.metadata.version(name)}" for name in ("torch", "transformers", "pydantic")]
    # the project's own requirements.txt: every installed direct requirement, gradio and diffusers among them
    pinned = {line.split("==")[0] for line in pip_constraints.constraint_lines()}
    assert {"torch", "torchvision", "diffusers", "transformers", "pydantic", "gradio", "fastapi"} <= pinned


def test_run_pip_from_install_py_runs_against_the_constraints_and_a_refusal_is_reported(tmp_path, fake_pip):
    services = make_services(tmp_path)
    installed = importlib.metadata.version("transformers")
    good = extension_with(services, "sd-good", "import launch\nlaunch.run_pip('install tiny-extra-lib', 'tiny')\n")
    bad = extension_with(services, "sd-old-transformers",
                         "import launch\nlaunch.run_pip('install transformers==4.57.0', 'transformers')\n")

    assert extensions.run_installer(good, fake_pip.root)[0]
    run = fake_pip.runs()[-1]
    constraint = run["argv"][run["argv"].index("--constraint") + 1]
    assert run["argv"][:2] == ["install", "tiny-extra-lib"] and run["PIP_CONSTRAINT"] == constraint
    assert run["pins"]["transformers"] == f"transformers=={installed}" and "gradio" in run["pins"]
    assert not Path(constraint).exists()   # the temporary file is gone after the install

    ok, output = extensions.run_installer(bad, fake_pip.root)
    assert not ok and "(constraint)" in output
    report = pip_constraints.record(services.paths.extensions, bad.name, ok, output)
    assert "refused a change to the web UI's own packages" in report
    assert "The user requested transformers==4.57.0" in report
    assert f"The user requested (constraint) transformers=={installed}" in report
    assert "To fix this" not in report   # only the lines saying what was refused
    assert importlib.metadata.version("transformers") == installed   # the core keeps its version

    table, *_ = tab.listing(services)   # the Extensions tab lists it under the extension's name
    row = next(part for part in table.split("<tr>") if "sd-old-transformers" in part)
    assert "The user requested (constraint) transformers==" in row and "sd-good" not in row
    # a later install that goes through clears the report
    pip_constraints.record(services.paths.extensions, bad.name, True, "")
    assert "(constraint)" not in tab.listing(services)[0]


def test_a_plain_pip_subprocess_and_a_requirements_file_get_the_constraints_too(tmp_path, fake_pip):
    services = make_services(tmp_path)
    install_py = ("import subprocess, sys\n"
                  "sys.exit(subprocess.run([sys.executable, '-m', 'pip', 'install', '-r', 'requirements.txt'])"
                  ".returncode)\n")
    extension = extension_with(services, "sd-old-pydantic", install_py, **{"requirements.txt": "pydantic<=1.10\n"})
    ok, output = extensions.run_installer(extension, fake_pip.root)
    assert not ok and "The user requested pydantic<=1.10" in output
    run = fake_pip.runs()[-1]
    assert "--constraint" not in run["argv"] and run["PIP_CONSTRAINT"]   # pip reads it from the environment
    assert run["pins"]["pydantic"] == f"pydantic=={importlib.metadata.version('pydantic')}"
    assert "failed (exit code 1)" in output and extension.name in output


def test_a_users_own_pip_constraint_is_kept_beside_the_cores(tmp_path, monkeypatch):
    own = tmp_path / "mine.txt"
    own.write_text("numpy<3\n")
    monkeypatch.setenv("PIP_CONSTRAINT", str(own))
    with pip_constraints.constraints_env() as (env, path):
        assert env["PIP_CONSTRAINT"].split() == [str(own), str(path)]
        with pip_constraints.constraints_env(env) as (inner, same):   # run_pip inside install.py reuses it
            assert same == path and inner["PIP_CONSTRAINT"] == env["PIP_CONSTRAINT"]
    assert not path.exists()


def test_startup_installs_record_what_was_refused(tmp_path, fake_pip, monkeypatch, caplog):
    """webui.prepare_extensions runs enabled extensions' install.py; a refusal is logged and kept for the tab."""
    import webui

    services = make_services(tmp_path)
    extension_with(services, "sd-pins-gradio", "import launch\nlaunch.run_pip('install gradio==3.41.2', 'gradio')\n")
    real = extensions.run_installer
    monkeypatch.setattr(extensions, "run_installer", lambda extension: real(extension, fake_pip.root))
    monkeypatch.setattr(script_loading, "preload", lambda parser, found: None)
    monkeypatch.setattr(paths_module, "from_args", lambda args: services.paths)
    webui.prepare_extensions(None, services.args)
    assert "sd-pins-gradio" in caplog.text and "(constraint) gradio==" in caplog.text
    found = {item.name: item for item in extensions.discover(services.paths, services.options, services.args)}
    assert any("(constraint) gradio==" in problem for problem in found["sd-pins-gradio"].problems)


def test_real_pip_refuses_a_core_package_under_the_constraints(tmp_path, monkeypatch):
    """pip itself honours PIP_CONSTRAINT: --no-index --dry-run resolves against what is installed, offline."""
    monkeypatch.setenv("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)   # no pip.conf index settings; --no-index: offline
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    monkeypatch.delenv("PIP_CONSTRAINT", raising=False)
    with pip_constraints.constraints_env() as (env, path):
        result = subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--dry-run", "pydantic<=1.10"],
                                env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    refused = pip_constraints.refused_lines(result.stdout + result.stderr)
    assert result.returncode != 0 and not path.exists()
    assert f"The user requested (constraint) pydantic=={importlib.metadata.version('pydantic')}" in [
        line.strip() for line in refused], refused


def test_run_pip_in_the_web_ui_process_gets_the_constraints_and_raises_on_a_refusal(monkeypatch):
    """An extension's script calling launch.run_pip at import: pip (a recording stand-in for subprocess.run) gets
    --constraint and PIP_CONSTRAINT; its failure is A1111's RuntimeError, not an exit of the web UI."""
    import launch

    calls = []

    def fake_run(command, **kwargs):
        constraint = kwargs["env"]["PIP_CONSTRAINT"]
        calls.append((command, constraint, Path(constraint).read_text()))
        return subprocess.CompletedProcess(command, 0 if "tiny-lib" in command else 1)

    monkeypatch.delenv("PIP_CONSTRAINT", raising=False)
    monkeypatch.setattr(launch.subprocess, "run", fake_run)
    launch.run_pip("install tiny-lib", "tiny-lib")
    with pytest.raises(RuntimeError, match="Couldn't install transformers"):
        launch.run_pip("install transformers==4.57.0", "transformers")
    launch.run_pip("uninstall -y tiny-lib")   # pip uninstall takes no --constraint (PIP_CONSTRAINT it ignores)
    assert calls[-1][0][3:] == ["uninstall", "-y", "tiny-lib"]
    for command, constraint, text in calls[:2]:
        assert command[:3] == [sys.executable, "-m", "pip"] and command[-2:] == ["--constraint", constraint]
        assert f"transformers=={importlib.metadata.version('transformers')}" in text.splitlines()
        assert not Path(constraint).exists()
