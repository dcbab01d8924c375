"""A1111's command-line flags, parsed once into a plain namespace.

Names and meanings follow A1111's `modules/cmd_args.py` (reference/a1111.md §8).
Flags are also read from the COMMANDLINE_ARGS environment variable, as A1111's
webui-user scripts do. Unknown flags are an error, not silently ignored.
"""
from __future__ import annotations

import argparse
import os
import shlex

from modules import paths as paths_module

# Flags whose values are secrets: never echoed by /sdapi/v1/cmd-flags or logs.
SECRET_FLAGS = ("gradio_auth", "api_auth", "gradio_auth_path", "tls_keyfile")


class _Parser(argparse.ArgumentParser):
    """Without arguments, parses the command line the web UI was started with, COMMANDLINE_ARGS included (A1111
    puts those into sys.argv, which extensions parse with `cmd_args.parser.parse_args()`)."""

    def parse_known_args(self, args=None, namespace=None):
        return super().parse_known_args(_command_line if args is None else args, namespace)


_command_line: list[str] | None = None   # None before parse_args: sys.argv[1:]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="webui.py",
        description="Stable Diffusion web UI (A1111-compatible) on diffusers.",
    )
    add = parser.add_argument

    # Network and serving
    add("--listen", action="store_true", help="bind to 0.0.0.0 so other machines can connect")
    add("--port", type=int, default=None, help="port to serve on (7860; 7861 with --nowebui)")
    add("--server-name", type=str, default=None, help="host name or address to bind to")
    add("--api", action="store_true", help="serve the /sdapi/v1 HTTP API next to the UI")
    add("--nowebui", action="store_true", help="serve only the API, no UI")
    add("--api-auth", type=str, default=None, help="HTTP Basic credentials for the API: user:pass[,user2:pass2]")
    add("--gradio-auth", type=str, default=None, help="login for the UI: user:pass[,user2:pass2]")
    add("--gradio-auth-path", type=str, default=None,
        help="file of UI logins (user:pass, one per line or comma-separated), added to --gradio-auth")
    add("--gradio-allowed-path", action="append", default=[],
        help="a folder the UI may serve files from, besides outputs; may be repeated")
    add("--api-log", action="store_true", help="log every API request")
    add("--api-server-stop", action="store_true",
        help="add the /sdapi/v1/server-stop, server-restart and server-kill API routes")
    add("--timeout-keep-alive", type=int, default=30,
        help="seconds an idle HTTP keep-alive connection stays open")
    add("--allowed-hosts", type=str, default=None,
        help="comma-separated host names the server answers to besides localhost, IP addresses, --server-name and "
             "(with --listen) this machine's name: 'pc.example.com', '.example.com' (and every name under it), "
             "'*' (any; for a proxy that checks names itself). Other names are refused (DNS rebinding)")
    add("--cors-allow-origins", type=str, default=None, help="comma-separated origins allowed by CORS")
    add("--cors-allow-origins-regex", type=str, default=None, help="regular expression of origins allowed by CORS")
    add("--share", action="store_true",
        help="A1111's public gradio.live link; refused here, because it needs the network (use --listen)")
    add("--autolaunch", action="store_true", help="open the UI in the system browser on start")

    # Installer
    add("--skip-install", action="store_true", help="do not install missing requirements")
    add("--skip-prepare-environment", action="store_true", help="skip all environment preparation")
    # Common in A1111 users' COMMANDLINE_ARGS; there is no CUDA test to skip here (CPU fallback is automatic).
    add("--skip-torch-cuda-test", action="store_true", help="accepted for compatibility; CPU fallback is automatic")
    add("--skip-python-version-check", action="store_true", help="start even on an untested Python version")
    add("--xformers", action="store_true", help="use xformers attention (CUDA only; installed on demand)")

    # Paths
    add("--data-dir", type=str, default=None, help="base folder for user data (models, outputs, config)")
    add("--models-dir", type=str, default=None, help="base folder for models (default: <data-dir>/models)")
    add("--ckpt-dir", type=str, default=None, help="folder of Stable Diffusion checkpoints")
    add("--ckpt", type=str, default=None, help="checkpoint to load at start (path or name)")
    add("--vae-dir", type=str, default=None, help="folder of VAE files")
    add("--vae-path", type=str, default=None, help="always use this VAE file (overrides the sd_vae setting)")
    add("--styles-file", action="append", default=[], help="styles CSV file; may be repeated and hold wildcards "
        "(default <data-dir>/styles.csv)")
    add("--lora-dir", type=str, default=None, help="folder of LoRA files")
    add("--embeddings-dir", type=str, default=None, help="folder of textual-inversion embeddings")
    add("--hypernetwork-dir", type=str, default=None, help="folder of hypernetworks")
    add("--textual-inversion-templates-dir", type=str, default=None,
        help="folder of prompt templates for training (default: the web UI's textual_inversion_templates)")
    add("--controlnet-dir", type=str, default=None, help="folder of ControlNet models")
    add("--controlnet-annotator-models-path", type=str, default=None,
        help="folder of ControlNet preprocessor weights (default models/annotators)")
    add("--no-half-controlnet", action="store_true", help="run ControlNet models in fp32")
    add("--clip-models-path", type=str, default=None,
        help="folder of OpenAI's CLIP file for Interrogate CLIP (ViT-L-14.pt), searched before models/CLIP")

    # Device and precision
    add("--use-cpu", nargs="+", default=[], help="run these parts on the CPU ('all' for everything)")
    add("--device-id", type=str, default=None, help="CUDA device index to use")
    add("--no-half", action="store_true", help="run models in fp32 on the GPU")
    add("--no-half-vae", action="store_true", help="run the VAE in fp32")
    add("--precision", choices=["full", "half", "autocast", "bf16"], default="autocast",
        help="full = fp32; half/autocast = fp16 on CUDA; bf16 = bfloat16 on CUDA")
    add("--opt-sdp-attention", action="store_true", help="PyTorch scaled-dot-product attention (the default)")
    add("--opt-sdp-no-mem-attention", action="store_true", help="SDP attention without the memory-efficient kernel")
    # Memory (A1111's names; see docs/performance.md for what each costs)
    add("--medvram", action="store_true",
        help="keep only the model part in use (text encoder, UNet or VAE) on the GPU: diffusers' model CPU offload")
    add("--medvram-sdxl", action="store_true", help="--medvram for SDXL models only")
    add("--lowvram", action="store_true",
        help="move each UNet block to the GPU only while it runs (diffusers' sequential offload), VAE in tiles")
    add("--lowram", action="store_true",
        help="accepted for compatibility: .safetensors checkpoints are memory-mapped, not copied into RAM first")
    add("--opt-channelslast", action="store_true", help="run the UNet in channels-last memory format")
    add("--upcast-sampling", action="store_true",
        help="accepted for compatibility: fp16 attention already accumulates in fp32 (use --no-half for fp32)")
    # A1111's other attention choices. xformers variants are xformers; the split and sub-quadratic ones are
    # its memory-saving kernels, which here is attention slicing (PyTorch SDPA is already memory-efficient).
    add("--force-enable-xformers", action="store_true", help="same as --xformers")
    add("--xformers-flash-attention", action="store_true", help="same as --xformers")
    for name in ("--opt-split-attention", "--opt-split-attention-v1", "--opt-split-attention-invokeai",
                 "--opt-sub-quad-attention"):
        add(name, action="store_true", help="compute attention in slices (less VRAM, slower)")
    for name in ("--sub-quad-q-chunk-size", "--sub-quad-kv-chunk-size", "--sub-quad-chunk-threshold"):
        add(name, type=int, default=None, help="accepted for compatibility (slice sizes are chosen automatically)")
    add("--disable-opt-split-attention", action="store_true", help="never slice attention")
    add("--disable-nan-check", action="store_true", help="do not re-run the VAE in fp32 when it returns NaNs")

    # Start-up behaviour
    add("--no-download-sd-model", action="store_true",
        help="never download a model (always true here: nothing is downloaded)")
    add("--skip-load-model-at-start", action="store_true", help="load the checkpoint on first use, not at start")
    add("--no-hashing", action="store_true", help="do not compute sha256 of checkpoints")
    add("--no-prompt-history", action="store_true", help="do not write params.txt")
    add("--freeze-settings", action="store_true", help="refuse every settings change")
    add("--freeze-settings-in-sections", type=str, default=None,
        help="comma-separated settings sections whose options cannot be changed")
    add("--freeze-specific-settings", type=str, default=None, help="comma-separated option keys that cannot be changed")
    add("--ui-settings-file", type=str, default=None, help="settings file (default <data-dir>/config.json)")
    add("--ui-config-file", type=str, default=None, help="UI defaults file (default <data-dir>/ui-config.json)")

    # Extensions
    add("--disable-all-extensions", action="store_true", help="load no extension, built-in ones included")
    add("--disable-extra-extensions", action="store_true", help="load only the built-in extensions")
    add("--enable-insecure-extension-access", action="store_true",
        help="allow installing and changing extensions from the UI even when the server is reachable from the "
             "network (--listen, --server-name)")
    add("--hide-ui-dir-config", action="store_true", help="hide directory settings from the UI and API")
    add("--theme", choices=["light", "dark"], default=None, help="UI theme")
    add("--ui-debug-mode", action="store_true", help="start the UI without loading a model")
    return parser


# A1111's folder flags whose default is a folder (A1111: a path under data_path or models_path), filled in after
# parsing with the folder this web UI uses, so that `os.path.join(shared.cmd_opts.lora_dir, ...)` works as in A1111;
# those whose A1111 default is None (--ckpt-dir, --vae-dir, --models-dir, --controlnet-dir) stay None.
_FOLDER_FLAGS = {"data_dir": "data", "lora_dir": "lora", "embeddings_dir": "embeddings",
                 "hypernetwork_dir": "hypernetworks", "ui_settings_file": "config_file",
                 "ui_config_file": "ui_config_file"}
# A1111's model-folder flags for the upscalers and face restorers, which here always read these folders under
# models/: set as attributes (to the folders read) for extensions, not accepted on the command line.
_MODEL_FOLDER_ATTRIBUTES = {"esrgan_models_path": "ESRGAN", "realesrgan_models_path": "RealESRGAN",
                            "dat_models_path": "DAT", "hat_models_path": "HAT", "swinir_models_path": "SwinIR",
                            "scunet_models_path": "ScuNET", "gfpgan_models_path": "GFPGAN",
                            "codeformer_models_path": "Codeformer"}

class ExtensionFlags:
    """The parser as extensions' preload.py see it. This web UI already has some flags A1111 left to extensions
    (the ControlNet extension's `--controlnet-dir`, ...): one an extension adds again keeps the web UI's
    definition instead of stopping the extension's preload with argparse's conflict error."""

    def __init__(self, parser: argparse.ArgumentParser):
        self._parser = parser

    def add_argument(self, *names, **kwargs):
        existing = next((self._parser._option_string_actions[name] for name in names
                         if name in self._parser._option_string_actions), None)
        return existing if existing is not None else self._parser.add_argument(*names, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._parser, name)


# A1111's `cmd_args.parser`: the parser of the last parse_args, with the flags extensions' preload.py added;
# `cmd_args.parser.parse_args()` reads the web UI's command line. Before parse_args, the web UI's own flags.
parser = build_parser()


def parse_args(argv: list[str] | None = None, preload=None) -> argparse.Namespace:
    """Parse flags from COMMANDLINE_ARGS followed by argv (argv wins on repeats). `preload(parser, known)` may
    add flags first (extensions' preload.py), given the flags known so far (where the extensions are)."""
    global parser, _command_line
    _command_line = shlex.split(os.environ.get("COMMANDLINE_ARGS", "")) + list(argv or [])
    parser = build_parser()
    if preload is not None:
        preload(parser, parser.parse_known_args(_command_line)[0])
    args = parser.parse_args(_command_line)
    if args.share:   # a public tunnel is a connection to a third-party server: this UI never makes one
        parser.error("--share is not supported: a public gradio.live link needs the network, which this web UI "
                     "never uses. Use --listen (with --gradio-auth or --api-auth) to serve your own network.")
    if args.gradio_auth_path and not os.path.isfile(args.gradio_auth_path):
        parser.error(f"--gradio-auth-path: no such file: {args.gradio_auth_path}")
    if args.timeout_keep_alive < 1:
        parser.error("--timeout-keep-alive must be at least 1 second")
    if args.port is None:
        args.port = 7861 if args.nowebui else 7860
    _fill_a1111_folders(args)
    return args


def _fill_a1111_folders(args: argparse.Namespace) -> None:
    folders = paths_module.from_args(args)
    for flag, field in _FOLDER_FLAGS.items():
        if getattr(args, flag) is None:
            setattr(args, flag, str(getattr(folders, field)))
    for name, folder in _MODEL_FOLDER_ATTRIBUTES.items():
        setattr(args, name, str(folders.models / folder))


def gradio_credentials(args: argparse.Namespace) -> str:
    """--gradio-auth merged with the lines of --gradio-auth-path, as "user:pass,user2:pass2" (A1111's
    `get_gradio_auth_creds`: each line may hold several comma-separated logins; blank lines are skipped)."""
    logins = [args.gradio_auth] if args.gradio_auth else []
    if args.gradio_auth_path:
        with open(args.gradio_auth_path, encoding="utf-8") as file:
            logins += [line.strip() for line in file if line.strip()]
    return ",".join(logins)


def is_non_local(args: argparse.Namespace) -> bool:
    """A1111's `webui_is_non_local`: the server can be reached from other machines."""
    return bool(args.listen or args.server_name)


def public_flags(args: argparse.Namespace) -> dict:
    """Flags as /sdapi/v1/cmd-flags shows them: secrets are reported only as set or not."""
    flags = dict(vars(args))
    for key in SECRET_FLAGS:
        if flags.get(key):
            flags[key] = "<hidden>"
    return flags
