"""torch.compile of the UNet (and the VAE decoder), with the compiled code kept on disk across restarts.

Settings (Optimizations): `compile_unet` is "None", "torch.compile" or "torch.compile + CUDA graphs" (torch.compile's
mode="reduce-overhead": each UNet call replays a recorded CUDA graph, no per-kernel launch cost); `compile_vae`
compiles the VAE decoder too, only with a compiled UNet.

How it fits the rest of the code:
- `apply` puts the compiled forward in place as the module's instance attribute `forward` (the same slot the per-job
  wrappers of `unet_forward.replaced_forward` use). ControlNet, AND prompts and the extension cfg callbacks then wrap
  the compiled forward: their Python runs eagerly around it and is never traced, so a fresh wrapper each job costs
  no recompile, and the ControlNet model is not compiled into the UNet's graph.
- The VAE is compiled at `vae.decoder`, under `vae.decode`'s own Python (tiling, slicing, the offload hook), so it
  serves diffusers' pipelines and `sampling.decode` alike.
- Dynamo's guards recompile whatever changes what the graph computes: another size or batch, ControlNet residuals,
  a hypernetwork's attention processor, circular padding, a dtype change. LoRAs do not: they are merged into the
  weights (the graph's inputs) and their adapters taken off before sampling (networks/lora.py). A recompile costs
  what the first compile did, less what the on-disk cache already holds.
- Shapes are static (dynamic=False): CUDA graphs need them, and static kernels are the fastest; A1111 users work in
  a handful of sizes, each compiled once. Dynamo's automatic dynamic shapes would instead turn the second size
  into a slower symbolic graph and break CUDA graphs. Up to RECOMPILE_LIMIT graphs per compiled function (dynamo's
  default, 8, is used up by two or three sizes with hires fix and ControlNet); past it dynamo runs that
  forward eagerly: slower, never wrong.

The on-disk caches (`configure_cache`): inductor's FX graph cache and AOTAutograd's cache hold the generated code
(C++ on the CPU, Triton kernels bundled in on CUDA), keyed by the graph, the torch version, the inductor config and
the device. A restarted server still traces each graph with dynamo (seconds) and records CUDA graphs again, but
skips inductor's code generation and compilation (the minutes).
"""
from __future__ import annotations

import functools
import inspect
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from modules.devices import FULL, LOWVRAM, MEDVRAM

log = logging.getLogger(__name__)

NONE, COMPILE, CUDA_GRAPHS = "None", "torch.compile", "torch.compile + CUDA graphs"
MODES = (NONE, COMPILE, CUDA_GRAPHS)
RECOMPILE_LIMIT = 64   # graphs per compiled function: sizes x batch sizes x (ControlNet, hypernetworks, ...)

_STATE = "_compiled_forward"   # the module attribute recording what `apply` installed
_logged: set[str] = set()      # messages logged once per process


def configure_cache(cache_dir: Path) -> None:
    """Keep inductor's caches (FX graphs, AOTAutograd, C++ and Triton kernels) under `cache_dir`, so that a restart
    reuses the compiled code. Call once at start, before any compile. It only sets the environment: nothing is
    imported or created until something is compiled."""
    # Inductor reads TORCHINDUCTOR_CACHE_DIR at each use (torch/_inductor/runtime/cache_dir_utils.py) and Triton's
    # kernels go to <it>/triton unless TRITON_CACHE_DIR is set. Paths derived from it are memoised: clear those in
    # case inductor already ran in this process (a test, an extension).
    previous = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(cache_dir).resolve())
    if previous and "torch._inductor.utils" in sys.modules:
        sys.modules["torch._inductor.utils"].clear_caches()
        if os.environ.get("TRITON_CACHE_DIR", "").startswith(previous):   # inductor's own choice, not the user's
            del os.environ["TRITON_CACHE_DIR"]


def effective_mode(unet_mode: str, cuda: bool, memory: str = FULL) -> str:
    """The compile mode that makes sense here: CUDA graphs need CUDA and weights that stay where they are."""
    if unet_mode not in MODES:
        _log_once(f"unknown compile_unet value {unet_mode!r}; not compiling")
        return NONE
    if unet_mode == NONE:
        return NONE
    if memory == LOWVRAM:
        # Sequential offload hooks every layer (moving its weights in and out): nothing to compile around.
        _log_once("torch.compile is off in --lowvram: its per-layer offloading cannot be compiled")
        return NONE
    if unet_mode == CUDA_GRAPHS and not cuda:
        _log_once("CUDA graphs need a CUDA device; compiling without them")
        return COMPILE
    if unet_mode == CUDA_GRAPHS and memory == MEDVRAM:
        # A CUDA graph replays fixed addresses; --medvram moves the UNet's weights in and out every job.
        _log_once("CUDA graphs are off in --medvram (the weights move every job); compiling without them")
        return COMPILE
    return unet_mode


def apply(pipeline, unet_mode: str, compile_vae: bool, cuda: bool, *, memory: str = FULL,
          backend: str | Callable = "inductor") -> None:
    """Make `pipeline`'s UNet (and VAE decoder) compiled as the settings say, or plain again; call before each job
    (outside the job's forward wrappers and offload hooks being put on). Cheap when nothing changed: the compiled
    forward stays in place and keeps the graphs it compiled. The compiling itself happens at the first call of each
    new shape. `backend` is for tests ("eager" exercises dynamo without inductor's code generation)."""
    mode = effective_mode(unet_mode, cuda, memory)
    _set(pipeline.unet, mode, backend)
    vae = getattr(pipeline, "vae", None)
    if vae is not None and hasattr(vae, "decoder"):
        # The decoder runs once per image: CUDA graphs would save little and keep its large activations in their
        # private memory pool, so the VAE is compiled without them.
        _set(vae.decoder, COMPILE if compile_vae and mode != NONE else NONE, backend)


def compiled_mode(module: torch.nn.Module) -> str:
    """What `apply` left on `module`: one of MODES."""
    state = module.__dict__.get(_STATE)
    return state.mode if state is not None and _installed(module, state) else NONE


# --------------------------------------------------------------------------- the forward slot

@dataclass(frozen=True)
class _Compiled:
    mode: str
    backend: Any
    forward: Callable   # what was installed


def _slot(module) -> str:
    """Where the module's forward lives: under accelerate's offload hook (which calls `_old_forward`) when one is
    on, otherwise the instance attribute `forward`."""
    return "_old_forward" if "_hf_hook" in module.__dict__ and "_old_forward" in module.__dict__ else "forward"


def _installed(module, state: _Compiled) -> bool:
    return module.__dict__.get(_slot(module)) is state.forward


def _class_forward(module) -> Callable:
    return type(module).forward.__get__(module)


def _is_class_forward(module, forward) -> bool:
    """True for no instance forward at all, or the class's own bound to the module (accelerate leaves that)."""
    return forward is None or (getattr(forward, "__func__", None) is type(module).forward
                               and getattr(forward, "__self__", None) is module)


def _set(module: torch.nn.Module, mode: str, backend) -> None:
    state = module.__dict__.get(_STATE)
    slot = _slot(module)
    current = module.__dict__.get(slot)
    if state is not None:
        if current is not state.forward:
            # A wrapper sits on top (apply called inside a job's pass), or someone replaced ours: leave it.
            _log_once(f"{type(module).__name__}.forward is wrapped; compile setting applies from the next job")
            return
        if state.mode == mode and state.backend == backend:
            return
        _restore(module, slot)
        current = module.__dict__.get(slot)
    if mode == NONE:
        return
    if not _is_class_forward(module, current):
        _log_once(f"{type(module).__name__}.forward is replaced by other code; not compiling it")
        return
    forward = _compile(_class_forward(module), mode, backend)
    setattr(module, slot, forward)
    module.__dict__[_STATE] = _Compiled(mode, backend, forward)
    log.info("%s.forward compiled with %s (the first call of each shape compiles)", type(module).__name__, mode)


def _restore(module, slot: str) -> None:
    """The module's own forward back, exactly as it was before `apply`."""
    del module.__dict__[_STATE]
    if slot == "forward":
        module.__dict__.pop("forward", None)
    else:
        module.__dict__[slot] = _class_forward(module)   # what accelerate's hook held before we compiled


def _compile(forward: Callable, mode: str, backend) -> Callable:
    _enable_caches()
    inductor = backend == "inductor"
    compiled = torch.compile(forward, backend=backend, dynamic=False, recompile_limit=RECOMPILE_LIMIT,
                             mode=("reduce-overhead" if mode == CUDA_GRAPHS else "default") if inductor else None)
    call = _canonical_call(forward)
    cuda_graphs = mode == CUDA_GRAPHS

    @functools.wraps(forward)
    def compiled_forward(*args, **kwargs):
        args, kwargs = call(args, kwargs)
        if not cuda_graphs:
            return compiled(*args, **kwargs)
        # CUDA graph outputs live in a pool the next replay overwrites; AND prompts keep one prediction across
        # UNet calls, pipelines hold theirs until the scheduler step. A copy of the (small) output is safe and
        # cheap; marking the step lets the next call replay even when grad is on.
        torch.compiler.cudagraph_mark_step_begin()
        return _cloned(compiled(*args, **kwargs))

    return compiled_forward


def _canonical_call(forward: Callable) -> Callable:
    """One calling convention for every caller: the required arguments by position, all others by keyword.

    Dynamo guards on how the arguments came (diffusers' LoRA-scale decorator on the UNet's forward takes
    `*args, **kwargs`): pipelines pass `encoder_hidden_states=` by keyword, the per-job wrappers (ControlNet,
    cfg callbacks) by position, and each convention would compile its own copy of the same graph. Arguments
    with defaults stay keywords, as that decorator reads `cross_attention_kwargs` from the keywords. ~12 µs a call.
    """
    signature = inspect.signature(forward)
    kinds = {parameter.kind for parameter in signature.parameters.values()}
    if inspect.Parameter.VAR_POSITIONAL in kinds:
        return lambda args, kwargs: (args, kwargs)
    positional = [name for name, parameter in signature.parameters.items()
                  if parameter.default is parameter.empty and parameter.kind in (
                      inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    var_keyword = next((name for name, parameter in signature.parameters.items()
                        if parameter.kind is inspect.Parameter.VAR_KEYWORD), None)

    def call(args, kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = bound.arguments
        first = tuple(arguments.pop(name) for name in positional)
        extra = arguments.pop(var_keyword, {}) if var_keyword else {}
        return first, {**arguments, **extra}

    return call


def _cloned(output):
    if isinstance(output, torch.Tensor):
        return output.clone()
    if isinstance(output, tuple):
        return tuple(_cloned(item) for item in output)
    if hasattr(output, "sample"):   # diffusers' BaseOutput (UNet2DConditionOutput)
        output.sample = _cloned(output.sample)
    return output


def _enable_caches() -> None:
    """Before compiling: the on-disk caches on (torch's defaults; set in case an environment default turned them
    off; the TORCHINDUCTOR_FX_GRAPH_CACHE / _AUTOGRAD_CACHE force switches still win, for debugging), and their
    folder writable, else torch's default folder rather than a failed job."""
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    inductor_config.fx_graph_cache = True
    inductor_config.autotune_local_cache = True
    functorch_config.enable_autograd_cache = True
    folder = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if folder:
        try:
            Path(folder).mkdir(parents=True, exist_ok=True)
        except OSError as error:
            log.warning("torch.compile cache %s cannot be created (%s); using torch's default", folder, error)
            del os.environ["TORCHINDUCTOR_CACHE_DIR"]


def _log_once(message: str) -> None:
    if message not in _logged:
        _logged.add(message)
        log.info("%s", message)
