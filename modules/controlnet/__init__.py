"""ControlNet: guiding a generation with an image's structure (the sd-webui-controlnet extension's surface).

`models` finds and loads ControlNet models, `preprocessors` turns photos into annotation maps,
`units` is the typed per-unit request, and `control` applies units to a UNet during a denoising pass.
"""
