"""Loop features: what a denoising pass does besides the pipeline's own loop, each one object.

A feature may `patch` the pipeline while it is in effect (wrap the denoiser's forward, hook its blocks, merge
weights, swap the VAE) and act at the end of each step (`on_step_end`: read or replace the step's tensors, or ask
the pipeline to stop). Two scopes use the one protocol:
- pass features (this module): `sampling.denoise` enters the ones a pass needs in a stated order (the first
  entered wraps the denoiser innermost) and calls each one's step end in that order;
- job features (the prompt's LoRAs and hypernetworks, the external VAE: networks/features.py; tiling here):
  `Generator.generate` enters them once for the whole job; they only patch.
As InvokeAI's backend/stable_diffusion/extensions. The denoiser is the UNet today; a transformer family's is
reached through `denoiser_of` and goes through the same two calls.

diffusers' HookRegistry was considered for the forward wrappers: it replaces `module.forward` in a way that
collides with the slot a compiled forward takes (diffusion/compilation.py), so the project's `replaced_forward`
stays, and step ends go through one callback that calls the features (diffusers' MultiPipelineCallbacks does
the same for its own callback objects).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from modules.controlnet.control import PassControl, controlled_unet
from modules.diffusion import compilation, stop_points
from modules.diffusion.token_merging import merged_tokens
from modules.diffusion.unet_forward import replaced_forward
from modules.jobs import Job
from modules.prompts import conditioning
from modules.prompts.composable import composable_unet
from modules.script_callbacks import AfterCFGCallbackParams, CallbackRegistry, CFGDenoisedParams, CFGDenoiserParams


def denoiser_of(pipe) -> torch.nn.Module:
    """The model a pipeline denoises with: the UNet (SD 1/2/XL); a transformer for the DiT families."""
    unet = getattr(pipe, "unet", None)
    return unet if unet is not None else pipe.transformer


@dataclass
class PassState:
    """Where the pass is: shared by the features (ControlNet's guidance window, AND's parts, the callbacks)."""

    runs: int                          # the steps this pass runs
    offset: int = 0                    # steps done before it (a refiner continuing)
    total: int = 0                     # steps of the whole pass, for progress
    step: int = 0                      # steps done in this pass
    latents: torch.Tensor | None = None   # the last finished step's
    stop: bool = False                 # set at a step end: the pipeline skips the remaining steps


@dataclass
class StepEnd:
    pipeline: Any
    index: int                          # the step that just ended (0-based)
    tensors: dict                       # diffusers' callback_kwargs: replace entries to change the next step


class LoopFeature:
    tensor_inputs: tuple[str, ...] = ()   # the pipeline tensors on_step_end reads or replaces, besides latents

    def patch(self, pipe) -> contextlib.AbstractContextManager:
        """The change to `pipe` (a diffusers pipeline) while the feature is in effect, undone on the way out."""
        return contextlib.nullcontext()

    def on_step_end(self, state: PassState, step: StepEnd) -> None:
        pass


@dataclass
class Progress(LoopFeature):
    """The job's progress and live previews; the stop when the job is interrupted or skipped, or when a refiner
    takes over."""

    job: Job
    preview: Callable | None
    every: int
    stop_after: int | None

    def on_step_end(self, state: PassState, step: StepEnd) -> None:
        done = step.index + 1
        state.step, state.latents = done, step.tensors["latents"]
        state.total = max(state.total, state.offset + done)   # DPM adaptive may call the model more than estimated
        self.job.set_progress(state.offset + done, state.total)
        if self.preview is not None and self.every > 0 and done % self.every == 0:
            self.job.set_preview(self.preview(step.tensors["latents"], step.pipeline))
        if self.job.should_stop or (self.stop_after is not None and done >= self.stop_after):
            state.stop = True


@dataclass
class PromptEditing(LoopFeature):
    """Prompt editing and alternation: the next step's conditioning handed to the pipeline (its CFG layout)."""

    plan: conditioning.ScheduledConditioning
    images: int
    pooled: bool                       # SDXL: the pooled embedding changes with the prompt too

    def __post_init__(self):
        self.tensor_inputs = ("prompt_embeds", "add_text_embeds") if self.pooled else ("prompt_embeds",)

    def on_step_end(self, state: PassState, step: StepEnd) -> None:
        done = step.index + 1
        if state.stop or done >= state.runs or not self.plan.changes_at(done):
            return
        cond, uncond = self.plan.at(done)
        embeds = [cond.batch_embeds(self.images)]
        pooled = [cond.batch_pooled(self.images)] if self.pooled else []
        if step.pipeline.do_classifier_free_guidance:
            embeds.insert(0, uncond.batch_embeds(self.images))
            pooled[:0] = [uncond.batch_pooled(self.images)] if self.pooled else []
        previous = step.tensors["prompt_embeds"]
        step.tensors["prompt_embeds"] = torch.cat(embeds).to(previous.device, previous.dtype)
        if self.pooled:
            step.tensors["add_text_embeds"] = torch.cat(pooled).to(previous.device, previous.dtype)


@dataclass
class ControlNetGuidance(LoopFeature):
    """The ControlNet units guiding the denoiser; their start/end are fractions of the whole pass (also where a
    refiner takes over part-way)."""

    controls: list[PassControl]
    state: PassState
    images: int
    steps: int                         # the pass's steps had no refiner taken over

    def patch(self, pipe):
        return controlled_unet(denoiser_of(pipe), self.controls, lambda: self.state.step / max(self.steps, 1), self.images)


@dataclass
class ComposablePrompts(LoopFeature):
    """AND: the denoiser answers with the weighted parts, which follow the steps themselves (the pipeline's own
    prompt embeds are left alone, so PromptEditing is not used with it)."""

    plan: conditioning.ScheduledConditioning
    state: PassState
    guided: bool

    def patch(self, pipe):
        plan, state = self.plan, self.state
        return composable_unet(denoiser_of(pipe), lambda: (plan.parts_at(state.step), plan.at(state.step)[1]),
                               guided=self.guided)


@dataclass
class TokenMerging(LoopFeature):
    ratio: float

    def patch(self, pipe):
        return merged_tokens(denoiser_of(pipe), self.ratio)


@dataclass
class ScriptCallbacks(LoopFeature):
    """A1111's on_cfg_denoiser / on_cfg_denoised around each denoiser call, on_cfg_after_cfg at each step end."""

    callbacks: CallbackRegistry
    state: PassState
    images: int

    def patch(self, pipe):
        return cfg_callbacks(denoiser_of(pipe), self.callbacks, lambda: self.state.offset + self.state.step, self.state.total,
                             self.images)

    def on_step_end(self, state: PassState, step: StepEnd) -> None:
        if self.callbacks.has("cfg_after_cfg"):
            after = AfterCFGCallbackParams(step.tensors["latents"], state.offset + step.index, state.total)
            self.callbacks.fire("cfg_after_cfg", after)
            step.tensors["latents"] = after.x


@dataclass
class StopPoints(LoopFeature):
    """An interrupt lands inside the denoiser's (and the ControlNets') blocks, not only between steps."""

    should_stop: Callable[[], bool]
    also: list = field(default_factory=list)   # more models the pass runs (the ControlNets)

    def patch(self, pipe):
        denoiser = denoiser_of(pipe)
        return stop_points_in(denoiser, [denoiser, *self.also], self.should_stop)


@dataclass
class Tiling(LoopFeature):
    """Seamless tiling (A1111's Tiling): every convolution of the denoiser and the VAE wraps around the image
    edges."""

    enabled: bool

    @contextlib.contextmanager
    def patch(self, pipe):
        if not self.enabled:
            yield
            return
        convs = [m for module in (denoiser_of(pipe), pipe.vae) for m in module.modules()
                 if isinstance(m, torch.nn.Conv2d)]
        previous = [conv.padding_mode for conv in convs]
        for conv in convs:
            conv.padding_mode = "circular"
        try:
            yield
        finally:
            for conv, mode in zip(convs, previous):
                conv.padding_mode = mode


def stop_points_in(denoiser, modules: list, should_stop: Callable[[], bool]):
    """Stop points in a pass's models (not in a compiled one); attention sliced where it runs on the CPU."""
    if compilation.compiled_mode(denoiser) != compilation.NONE:
        return contextlib.nullcontext()
    on_cpu = next(denoiser.parameters()).device.type == "cpu"   # (under --lowvram the weights are "meta")
    return stop_points.inside(modules, should_stop, slice_attention=on_cpu)


@contextlib.contextmanager
def unet_outputs(unet, observe: Callable[[torch.Tensor], None]):
    """`observe(output)` sees each output of the denoiser while in effect."""
    original = unet.forward

    def forward(*args, **kwargs):
        output = original(*args, **kwargs)
        observe(output[0] if isinstance(output, tuple) else output.sample)
        return output

    with replaced_forward(unet, forward):
        yield


@contextlib.contextmanager
def cfg_callbacks(unet, callbacks: CallbackRegistry | None, step_of, total: int, images: int):
    """A1111's on_cfg_denoiser / on_cfg_denoised around each UNet call: the first sees (and may replace) the
    UNet's input latents with the text conditioning split into cond and uncond, the second its output."""
    if callbacks is None or not (callbacks.has("cfg_denoiser") or callbacks.has("cfg_denoised")):
        yield
        return
    original = unet.forward

    def forward(sample, timestep, encoder_hidden_states, *args, **kwargs):
        guided = sample.shape[0] == 2 * images   # diffusers batches [uncond, cond] under CFG
        uncond, cond = encoder_hidden_states.chunk(2) if guided else (None, encoder_hidden_states)
        before = CFGDenoiserParams(sample, None, timestep, step_of(), total, cond, uncond)
        callbacks.fire("cfg_denoiser", before)
        output = original(before.x, timestep, encoder_hidden_states, *args, **kwargs)
        prediction = output[0] if isinstance(output, tuple) else output.sample
        after = CFGDenoisedParams(prediction, step_of(), total, unet)
        callbacks.fire("cfg_denoised", after)
        if isinstance(output, tuple):
            return (after.x, *output[1:])
        output.sample = after.x
        return output

    with replaced_forward(unet, forward):
        yield
