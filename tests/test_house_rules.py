"""The house rules of docs/architecture.md that a change can break without any other test noticing: the map names
files that exist, the backend imports no web framework, modules/ keeps only A1111's module names and the
foundation at its top, and no Python file grows past 500 lines."""
from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"


# The file names of A1111 v1.10's modules/ folder (and its old generation_parameters_copypaste): extensions import
# these, so each may exist here as a thin forward to the project's services (docs/extensions.md).
A1111_MODULES = {
    "cache", "call_queue", "cmd_args", "codeformer_model", "config_states", "dat_model", "deepbooru",
    "deepbooru_model", "devices", "errors", "esrgan_model", "extensions", "extra_networks",
    "extra_networks_hypernet", "extras", "face_restoration", "face_restoration_utils", "fifo_lock",
    "generation_parameters_copypaste", "gfpgan_model", "hashes", "hat_model", "images", "img2img", "import_hook",
    "infotext_utils", "infotext_versions", "initialize", "initialize_util", "interrogate", "launch_utils",
    "localization", "logging_config", "lowvram", "mac_specific", "masking", "memmon", "modelloader", "npu_specific",
    "options", "patches", "paths", "paths_internal", "postprocessing", "processing", "profiling", "progress",
    "prompt_parser", "realesrgan_model", "restart", "rng", "rng_philox", "safe", "script_callbacks",
    "script_loading", "scripts", "scripts_auto_postprocessing", "scripts_postprocessing",
    "sd_disable_initialization", "sd_emphasis", "sd_hijack", "sd_hijack_checkpoint", "sd_hijack_clip",
    "sd_hijack_clip_old", "sd_hijack_ip2p", "sd_hijack_open_clip", "sd_hijack_optimizations", "sd_hijack_unet",
    "sd_hijack_utils", "sd_hijack_xlmr", "sd_models", "sd_models_config", "sd_models_types", "sd_models_xl",
    "sd_samplers", "sd_samplers_cfg_denoiser", "sd_samplers_common", "sd_samplers_compvis", "sd_samplers_extra",
    "sd_samplers_kdiffusion", "sd_samplers_lcm", "sd_samplers_timesteps", "sd_samplers_timesteps_impl",
    "sd_schedulers", "sd_unet", "sd_vae", "sd_vae_approx", "sd_vae_taesd", "shared", "shared_cmd_options",
    "shared_gradio_themes", "shared_init", "shared_items", "shared_options", "shared_state", "shared_total_tqdm",
    "styles", "sub_quadratic_attention", "sysinfo", "timer", "torch_utils", "txt2img", "ui", "ui_checkpoint_merger",
    "ui_common", "ui_components", "ui_extensions", "ui_extra_networks", "ui_extra_networks_checkpoints",
    "ui_extra_networks_hypernets", "ui_extra_networks_textual_inversion", "ui_extra_networks_user_metadata",
    "ui_gradio_extensions", "ui_loadsave", "ui_postprocessing", "ui_prompt_styles", "ui_settings", "ui_tempdir",
    "ui_toprow", "upscaler", "upscaler_utils", "util", "xpu_specific",
}
# The project's own foundation beside them; everything else lives in a sub-package named for what it holds.
FOUNDATION = {"__init__", "jobs", "services", "version"}


def tracked_python_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True)
    return [ROOT / line for line in listed.stdout.splitlines() if (ROOT / line).exists()]


def test_every_file_the_architecture_doc_names_exists():
    named = set(re.findall(r"`((?:modules/)?[a-z_]+(?:/[a-z_]+)*\.py)`", DOC.read_text(encoding="utf-8")))
    assert named, "the doc names no file: the pattern is out of date"
    missing = []
    for name in sorted(named):
        candidates = [ROOT / name, ROOT / "modules" / name]
        if not any(path.exists() for path in candidates) and not list((ROOT / "modules").rglob(name)):
            missing.append(name)
    assert not missing, f"docs/architecture.md names files that do not exist: {missing}"


def test_the_walk_names_real_functions():
    text = DOC.read_text(encoding="utf-8")
    walk = text[text.index("## One txt2img request"):text.index("## Where things go")]
    sources = "\n".join(path.read_text(encoding="utf-8") for path in (ROOT / "modules").rglob("*.py"))
    # `Generator.generate`, `noise.resolve_seed(...)`, `_prepare_inputs`: code, not a field or a file name
    code = [token.split("(")[0] for token in re.findall(r"`([\w.]+(?:\([^`]*\))?)`", walk)
            if not re.search(r"\.(py|txt|png|json)$", token) and ("(" in token or "." in token or token.startswith("_"))]
    names = {token.rsplit(".", 1)[-1] for token in code}
    assert len(names) > 40, names
    unknown = sorted(name for name in names
                     if not re.search(rf"\b(def|class) {name}\b|^\s*{name}\s*[:=]", sources, re.MULTILINE))
    assert not unknown, f"the walk in docs/architecture.md names code that no longer exists: {unknown}"


def test_modules_top_level_holds_only_a1111_names_and_the_foundation():
    top = {path.stem for path in (ROOT / "modules").glob("*.py")}
    others = sorted(top - A1111_MODULES - FOUNDATION)
    assert not others, f"move these into a sub-package (docs/architecture.md, where things go): {others}"


def test_no_python_file_is_over_500_lines():
    long = {str(path.relative_to(ROOT)): count for path in tracked_python_files()
            if (count := len(path.read_text(encoding="utf-8").splitlines())) > 500}
    assert not long, f"split these (docs/architecture.md, rule 7): {long}"


def test_the_backend_imports_no_web_framework():
    """Only modules/api/ and modules/ui/ may import gradio, fastapi or starlette (at the top or in a function)."""
    frameworks = {"gradio", "fastapi", "starlette"}
    offending = {}
    for path in (ROOT / "modules").rglob("*.py"):
        if path.relative_to(ROOT / "modules").parts[0] in ("api", "ui"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            found = [name for name in names if name.split(".")[0] in frameworks]
            if found:
                offending[str(path.relative_to(ROOT))] = found
    assert not offending, f"backend files importing a web framework (docs/architecture.md, layers): {offending}"
