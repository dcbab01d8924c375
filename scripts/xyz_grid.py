"""X/Y/Z plot (A1111's scripts/xyz_grid.py): one generation per combination of up to three axes of values,
drawn as a labelled grid (one per Z value, side by side, when there is a Z axis).

The axis list is A1111's, in its order, because API clients send the axis type as an index into it; the
axes this backend cannot vary (k-diffusion sigma settings, ...) stay in the list, are left out
of the UI, and are refused with a reason. Every value is checked before the first image: each axis value
alone, then every cell, through the request validator, so a misspelt sampler fails at once, naming it.
"""
import copy
import itertools
import json
import math
import os
from dataclasses import dataclass
from typing import Any, Callable

from modules import scripts
from modules.output import grids
from modules.diffusion import noise, samplers
from modules.jobs import JobError
from modules.processing import Processed, process_images

TITLE = "X/Y/Z plot"
PERMUTATIONS = "permutations"      # an axis type: every order of the given values (Prompt order)


def apply_field(name: str):
    def apply(p, value, values):
        setattr(p, name, value)
    return apply


def apply_override(key: str):
    def apply(p, value, values):
        p.override_settings[key] = value
    return apply


def apply_prompt(p, value, values):
    if values[0] not in p.prompt and values[0] not in p.negative_prompt:
        raise ValueError(f"Prompt S/R did not find {values[0]!r} in the prompt or negative prompt")
    p.prompt = p.prompt.replace(values[0], value)
    p.negative_prompt = p.negative_prompt.replace(values[0], value)


def apply_order(p, value, values):
    """Put the given prompt pieces into this order, each where one of them was."""
    missing = [token for token in value if token not in p.prompt]
    if missing:
        raise ValueError(f"Prompt order did not find {missing[0]!r} in the prompt")
    ordered = sorted(value, key=p.prompt.find)
    rest, parts = p.prompt, []
    for token in ordered:
        at = rest.find(token)
        parts.append(rest[:at])
        rest = rest[at + len(token):]
    p.prompt = "".join(part + token for part, token in zip(parts, value)) + rest


def apply_checkpoint(p, value, values):
    p.override_settings["sd_model_checkpoint"] = value


def apply_vae(p, value, values):
    spelled = {"auto": "Automatic", "automatic": "Automatic", "none": "None"}
    p.override_settings["sd_vae"] = spelled.get(value.strip().lower(), value.strip())


def apply_styles(p, value, values):
    p.styles = [*p.styles, *(name.strip() for name in value.split(",") if name.strip())]


def apply_size(p, value, values):
    width, _, height = value.lower().partition("x")
    try:
        p.width, p.height = int(width.strip()), int(height.strip())
    except ValueError:
        raise ValueError(f"{value!r} is not a size like 512x768") from None


def do_nothing(p, value, values):
    pass


def format_value_add_label(p, option, value):
    return f"{option.label}: {round(value, 8) if isinstance(value, float) else value}"


def format_value(p, option, value):
    return round(value, 8) if isinstance(value, float) else value


def format_value_join_list(p, option, value):
    return ", ".join(value)


def format_nothing(p, option, value):
    return ""


def format_remove_path(p, option, value):
    return os.path.basename(value)


def checkpoint_names(generator) -> list[str]:
    return sorted((info.name for info in generator.manager.registry.items()), key=str.casefold)


@dataclass(frozen=True)
class AxisOption:
    label: str
    type: Any                                   # int, float, str or PERMUTATIONS
    apply: Callable = do_nothing                # apply(p, value, all values of the axis)
    format_value: Callable = format_value_add_label
    cost: float = 0.0                           # expensive to change (a checkpoint): iterated outermost
    choices: Callable | None = None             # choices(generator) → the values the UI offers
    tab: str | None = None                      # "txt2img" or "img2img" only; None: both
    unavailable: str = ""                       # why this A1111 axis cannot be used here


def _missing(label: str, kind, why: str, tab: str | None = None) -> AxisOption:
    return AxisOption(label, kind, tab=tab, unavailable=why)


K_DIFFUSION = "the diffusers samplers used here have no such setting"

AXIS_OPTIONS = [
    AxisOption("Nothing", str, format_value=format_nothing),
    AxisOption("Seed", int, apply_field("seed")),
    AxisOption("Var. seed", int, apply_field("subseed")),
    AxisOption("Var. strength", float, apply_field("subseed_strength")),
    AxisOption("Steps", int, apply_field("steps")),
    AxisOption("Hires steps", int, apply_field("hr_second_pass_steps"), tab="txt2img"),
    AxisOption("CFG Scale", float, apply_field("cfg_scale")),
    _missing("Image CFG Scale", float, "instruct-pix2pix models are not supported", tab="img2img"),
    AxisOption("Prompt S/R", str, apply_prompt, format_value=format_value),
    AxisOption("Prompt order", PERMUTATIONS, apply_order, format_value=format_value_join_list),
    AxisOption("Sampler", str, apply_field("sampler_name"), format_value=format_value,
               choices=lambda generator: samplers.sampler_names(), tab="txt2img"),
    AxisOption("Hires sampler", str, apply_field("hr_sampler_name"),
               choices=lambda generator: samplers.sampler_names(), tab="txt2img"),
    AxisOption("Sampler", str, apply_field("sampler_name"), format_value=format_value,
               choices=lambda generator: samplers.sampler_names(), tab="img2img"),
    AxisOption("Checkpoint name", str, apply_checkpoint, format_value=format_remove_path, cost=1.0,
               choices=checkpoint_names),
    _missing("Negative Guidance minimum sigma", float, K_DIFFUSION),
    _missing("Sigma Churn", float, K_DIFFUSION),
    _missing("Sigma min", float, K_DIFFUSION),
    _missing("Sigma max", float, K_DIFFUSION),
    _missing("Sigma noise", float, K_DIFFUSION),
    AxisOption("Schedule type", str, apply_field("scheduler"), choices=lambda generator: samplers.schedule_labels()),
    _missing("Schedule min sigma", float, K_DIFFUSION),
    _missing("Schedule max sigma", float, K_DIFFUSION),
    _missing("Schedule rho", float, K_DIFFUSION),
    _missing("Skip Early CFG", float, "skipping CFG on early steps is not supported"),
    _missing("Beta schedule alpha", float, K_DIFFUSION),
    _missing("Beta schedule beta", float, K_DIFFUSION),
    _missing("Eta", float, K_DIFFUSION),
    AxisOption("Clip skip", int, apply_override("CLIP_stop_at_last_layers")),
    AxisOption("Denoising", float, apply_field("denoising_strength")),
    _missing("Initial noise multiplier", float, K_DIFFUSION),
    _missing("Extra noise", float, K_DIFFUSION),
    AxisOption("Hires upscaler", str, apply_field("hr_upscaler"),
               choices=lambda generator: generator.upscalers.hires_choices(), tab="txt2img"),
    _missing("Cond. Image Mask Weight", float, "the conditioning mask weight is not supported", tab="img2img"),
    AxisOption("VAE", str, apply_vae, cost=0.7, choices=lambda generator: generator.networks.vaes.choices()),
    AxisOption("Styles", str, apply_styles, choices=lambda generator: generator.networks.styles.names()),
    _missing("UniPC Order", int, K_DIFFUSION),
    _missing("Face restore", str, "face restoration during generation is not supported; use Extras"),
    AxisOption("Token merging ratio", float, apply_override("token_merging_ratio")),
    AxisOption("Token merging ratio high-res", float, apply_override("token_merging_ratio_hr")),
    _missing("Always discard next-to-last sigma", str, K_DIFFUSION),
    _missing("SGM noise multiplier", str, K_DIFFUSION),
    AxisOption("Refiner checkpoint", str, apply_field("refiner_checkpoint"), format_value=format_remove_path,
               cost=1.0, choices=lambda generator: ["None", *checkpoint_names(generator)]),
    AxisOption("Refiner switch at", float, apply_field("refiner_switch_at")),
    _missing("RNG source", str, "a per-image random number source is not supported; use the RNG setting"),
    _missing("FP8 mode", str, "FP8 weights are not supported"),
    AxisOption("Size", str, apply_size),
]


def axis_options(is_img2img: bool) -> list[AxisOption]:
    """The axes of one tab, in A1111's order (the API's axis type is an index into this list)."""
    tab = "img2img" if is_img2img else "txt2img"
    return [option for option in AXIS_OPTIONS if option.tab in (None, tab)]


def _services():
    # The UI asks for the current checkpoints, VAEs, styles and upscalers when an axis is chosen.
    from modules import shared

    return shared.services()


@dataclass
class _Axis:
    name: str                   # "X", "Y" or "Z"
    option: AxisOption
    text: str                   # the values as given (the infotext's "X Values")
    values: list

    def labels(self, p) -> list[str]:
        return [str(self.option.format_value(p, self.option, value)) for value in self.values]

    def fixed_seeds(self, no_fixed_seeds: bool) -> bool:
        return self.option.label in ("Seed", "Var. seed") and not no_fixed_seeds


class Script(scripts.Script):
    def title(self):
        return TITLE

    def ui(self, is_img2img):
        import gradio as gr

        from modules.ui.common import PRIVATE, slider, tool_button

        options = axis_options(is_img2img)
        listed = [(option.label, index) for index, option in enumerate(options) if not option.unavailable]
        axes = []
        for axis, default in (("x", 1), ("y", 0), ("z", 0)):
            with gr.Row():
                kind = gr.Dropdown(label=f"{axis.upper()} type", choices=listed, value=default,
                                   elem_id=self.elem_id(f"{axis}_type"))
                text = gr.Textbox(label=f"{axis.upper()} values", lines=1, elem_id=self.elem_id(f"{axis}_values"))
                picked = gr.Dropdown(label=f"{axis.upper()} values", choices=[], value=[], multiselect=True,
                                     allow_custom_value=True, visible=False, interactive=True)
                fill = tool_button("\U0001f4d2", elem_id=f"xyz_grid_fill_{axis}_tool_button", visible=False)
            axes.append((kind, text, picked, fill))
        # pasting a grid's infotext sets the axes again (the Script dropdown follows its "Script" key)
        self.infotext_fields = [(component, f"{axis} {what}") for axis, (kind, text, _, _) in zip("XYZ", axes)
                                for component, what in ((kind, "Type"), (text, "Values"))]

        with gr.Row(variant="compact", elem_id="axis_options"):
            with gr.Column():
                draw_legend = gr.Checkbox(label="Draw legend", value=True, elem_id=self.elem_id("draw_legend"))
                no_fixed_seeds = gr.Checkbox(label="Keep -1 for seeds", value=False,
                                             elem_id=self.elem_id("no_fixed_seeds"))
                with gr.Row():
                    vary = [gr.Checkbox(label=f"Vary seeds for {axis}", value=False, min_width=80,
                                        elem_id=self.elem_id(f"vary_seeds_{axis.lower()}"))
                            for axis in "XYZ"]
            with gr.Column():
                include_lone_images = gr.Checkbox(label="Include Sub Images", value=False,
                                                  elem_id=self.elem_id("include_lone_images"))
                include_sub_grids = gr.Checkbox(label="Include Sub Grids", value=False,
                                                elem_id=self.elem_id("include_sub_grids"))
                csv_mode = gr.Checkbox(label="Use text inputs instead of dropdowns", value=False,
                                       elem_id=self.elem_id("csv_mode"))
            with gr.Column():
                margin_size = slider(label="Grid margins (px)", minimum=0, maximum=500, value=0, step=2,
                                     elem_id=self.elem_id("margin_size"))

        with gr.Row(variant="compact", elem_id="swap_axes"):
            swaps = [(gr.Button(value=f"Swap {a}/{b} axes", elem_id=f"{a.lower()}{b.lower()}_grid_swap_axes_button"),
                      "XYZ".index(a), "XYZ".index(b)) for a, b in (("X", "Y"), ("Y", "Z"), ("X", "Z"))]

        def option_at(index) -> AxisOption:
            return options[index] if isinstance(index, int) and 0 <= index < len(options) else options[0]

        def select_axis(index, text, picked, csv):
            """Show the value dropdown for axes with choices (and the 📒 button), else the textbox; values move
            between the two when "Use text inputs" changes."""
            option = option_at(index)
            choices = option.choices(_services().generator) if option.choices else None
            if choices is not None:
                if csv and picked:
                    text, picked = grids.csv_string([value for value in picked if value in choices]), []
                elif not csv and text:
                    text, picked = "", [value for value in grids.csv_values(text) if value in choices]
            return (gr.update(visible=choices is not None),
                    gr.update(visible=choices is None or csv, value=text),
                    gr.update(choices=choices or [], visible=choices is not None and not csv, value=picked or []))

        def fill(index, csv):
            option = option_at(index)
            if option.choices is None:
                return gr.update(), gr.update()
            choices = option.choices(_services().generator)
            return (gr.update(value=grids.csv_string(choices)), gr.update()) if csv else \
                (gr.update(), gr.update(value=choices))

        for kind, text, picked, fill_button in axes:
            kind.change(select_axis, inputs=[kind, text, picked, csv_mode], outputs=[fill_button, text, picked],
                        queue=False, show_progress="hidden", api_visibility=PRIVATE)
            fill_button.click(fill, inputs=[kind, csv_mode], outputs=[text, picked], queue=False,
                              show_progress="hidden", api_visibility=PRIVATE)

        def change_mode(csv, *values):
            updates = []
            for start in range(0, len(values), 3):
                updates += select_axis(*values[start:start + 3], csv)
            return updates

        csv_mode.change(change_mode, inputs=[csv_mode, *(c for axis in axes for c in axis[:3])],
                        outputs=[c for kind, text, picked, fill_button in axes for c in (fill_button, text, picked)],
                        queue=False, show_progress="hidden", api_visibility=PRIVATE)
        for button, first, second in swaps:
            swapped = [*axes[first][:3], *axes[second][:3]]
            button.click(lambda *v: (*v[3:], *v[:3]), inputs=swapped, outputs=swapped, queue=False,
                         show_progress="hidden", api_visibility=PRIVATE)

        (x_type, x_values, x_values_dropdown, _), (y_type, y_values, y_values_dropdown, _), \
            (z_type, z_values, z_values_dropdown, _) = axes
        return [x_type, x_values, x_values_dropdown, y_type, y_values, y_values_dropdown, z_type, z_values,
                z_values_dropdown, draw_legend, include_lone_images, include_sub_grids, no_fixed_seeds, *vary,
                margin_size, csv_mode]

    # ------------------------------------------------------------------ the run

    def run(self, p, x_type, x_values, x_values_dropdown, y_type, y_values, y_values_dropdown, z_type, z_values,
            z_values_dropdown, draw_legend, include_lone_images, include_sub_grids, no_fixed_seeds, vary_seeds_x,
            vary_seeds_y, vary_seeds_z, margin_size, csv_mode):
        if not no_fixed_seeds:
            p.seed, p.subseed = noise.resolve_seed(p.seed), noise.resolve_seed(p.subseed)
        options = axis_options(self.is_img2img)
        x, y, z = (self._axis(name, options, kind, text, picked, bool(csv_mode), bool(no_fixed_seeds), p)
                   for name, kind, text, picked in (("X", x_type, x_values, x_values_dropdown),
                                                    ("Y", y_type, y_values, y_values_dropdown),
                                                    ("Z", z_type, z_values, z_values_dropdown)))
        count = len(x.values) * len(y.values) * len(z.values)
        megapixels = count * p.width * p.height / 1_000_000
        if megapixels > grids.MAX_GRID_MEGAPIXELS:
            raise JobError(f"{TITLE}: the grid would be {megapixels:.0f} megapixels, over the "
                           f"{grids.MAX_GRID_MEGAPIXELS} megapixel limit; use fewer values or a smaller size")
        vary = (bool(vary_seeds_x), bool(vary_seeds_y), bool(vary_seeds_z))
        cells = {position: self._cell(p, (x, y, z), position, vary)
                 for position in itertools.product(*(range(len(axis.values)) for axis in (x, y, z)))}
        job = p._job
        job.image_count = count * p.n_iter   # the progress bar covers every cell
        results: dict[tuple, Processed] = {}
        for number, position in enumerate(_order((x, y, z)), start=1):
            if job.interrupted:
                break
            job.textinfo = f"{TITLE}: cell {number} of {count}"
            results[position] = process_images(cells[position])
        if not results:
            return Processed(p, [])
        return self._gather(p, (x, y, z), results, bool(draw_legend), int(margin_size or 0),
                            bool(include_lone_images), bool(include_sub_grids), bool(no_fixed_seeds))

    def _axis(self, name, options, kind, text, picked, csv_mode, no_fixed_seeds, p) -> _Axis:
        """One axis: its option (an A1111 index, or a label) and values, each value checked on its own."""
        option = _find_option(name, options, kind)
        if option.label == "Nothing":
            return _Axis(name, option, "", [0])
        if option.choices is not None and not csv_mode and picked:
            given = [str(value) for value in picked]
            text = grids.csv_string(given)
        else:
            given = grids.csv_values(text or "")
        try:
            if option.type in (int, float):
                values = grids.expand_numbers(given, option.type)
            elif option.type == PERMUTATIONS:
                if math.factorial(len(given)) > grids.MAX_AXIS_VALUES:
                    raise ValueError(f"{len(given)} values make {math.factorial(len(given))} orders; "
                                     f"at most {grids.MAX_AXIS_VALUES}")
                values = list(itertools.permutations(given))
            else:
                values = given
        except ValueError as error:
            raise JobError(f"{TITLE}: {name} values ({option.label}): {error}") from None
        if not values:
            raise JobError(f"{TITLE}: {name} values ({option.label}): none given")
        if option.label in ("Seed", "Var. seed") and not no_fixed_seeds:
            values = [noise.resolve_seed(value) for value in values]   # -1 becomes one seed for the whole row
        for value in values:
            check = copy.copy(p)
            try:
                option.apply(check, value, values)
                check.to_request()
            except (ValueError, JobError) as error:
                raise JobError(f"{TITLE}: {name} value {_shown(value)!r} ({option.label}): {error}") from None
        return _Axis(name, option, text or "", values)

    def _cell(self, p, axes, position, vary):
        """The `p` of one cell, validated (a combination can be invalid where each value alone is not)."""
        cell = copy.copy(p)
        for axis, index in zip(axes, position):
            axis.option.apply(cell, axis.values[index], axis.values)
        if cell.seed >= 0:
            # "Vary seeds for X/Y/Z": a different seed along that axis (A1111 numbers the cells x fastest).
            stride = 1
            for axis, index, varied in zip(axes, position, vary):
                if varied:
                    cell.seed += index * stride
                    stride *= len(axis.values)
        try:
            cell.to_request()
        except JobError as error:
            where = ", ".join(f"{axis.name} = {_shown(axis.values[index])}" for axis, index in zip(axes, position)
                              if axis.option.label != "Nothing")
            raise JobError(f"{TITLE}: cell {where}: {error}") from None
        return cell

    def _gather(self, p, axes, results, draw_legend, margin, include_lone_images, include_sub_grids,
                no_fixed_seeds) -> Processed:
        """The grid(s), their infotexts and files, and the cells, as one result (grids first)."""
        x, y, z = axes
        first = results.get((0, 0, 0)) or next(iter(results.values()))
        pictures = {position: _cell_image(processed) for position, processed in results.items()}
        template = next((picture for picture in pictures.values() if picture is not None), None)
        if template is None:
            return Processed(p, [])
        blank = template.copy()
        blank.paste((0, 0, 0), (0, 0, *blank.size))     # a cell the interrupt left out
        infotexts = {position: processed.infotexts[0] for position, processed in results.items()
                     if processed.infotexts}

        def first_text(iz: int) -> str:
            return infotexts.get((0, 0, iz)) or next(iter(infotexts.values()), "")

        script_params = {"Script": TITLE}
        for axis in (x, y):
            if axis.option.label != "Nothing":
                script_params |= {f"{axis.name} Type": axis.option.label, f"{axis.name} Values": axis.text}
                if axis.fixed_seeds(no_fixed_seeds):
                    script_params[f"Fixed {axis.name} Values"] = ", ".join(str(v) for v in axis.values)
        main_params = dict(script_params)
        if z.option.label != "Nothing":
            main_params |= {"Z Type": z.option.label, "Z Values": z.text}
            if z.fixed_seeds(no_fixed_seeds):
                main_params["Fixed Z Values"] = ", ".join(str(v) for v in z.values)

        sub_grids, sub_texts = [], []
        for iz in range(len(z.values)):
            cells = [pictures.get((ix, iy, iz)) or blank for iy in range(len(y.values)) for ix in range(len(x.values))]
            grid = grids.image_grid(cells, rows=len(y.values))
            if draw_legend:
                width, height = grid.width // len(x.values), grid.height // len(y.values)
                grid = grids.draw_grid_annotations(
                    grid, width, height, [[grids.GridAnnotation(label)] for label in x.labels(p)],
                    [[grids.GridAnnotation(label)] for label in y.labels(p)], margin)
            sub_grids.append(grid)
            sub_texts.append(grids.with_params(first_text(iz), script_params))
        if len(sub_grids) == 1:
            main = sub_grids[0]
        else:
            main = grids.image_grid(sub_grids, rows=1)
            if draw_legend:
                # image_grid gives every sub-grid a cell as large as the largest (a Z "Size" axis)
                main = grids.draw_grid_annotations(main, max(grid.width for grid in sub_grids),
                                                   max(grid.height for grid in sub_grids),
                                                   [[grids.GridAnnotation(label)] for label in z.labels(p)],
                                                   [[grids.GridAnnotation()]])
        main_text = grids.with_params(first_text(0), main_params)
        shown = [(main, main_text)]
        if include_sub_grids and len(sub_grids) > 1:
            shown += list(zip(sub_grids, sub_texts))

        generator = p._generator
        saved = [path for processed in results.values() for path in processed.saved]
        outdir = "outdir_img2img_grids" if p.is_img2img else "outdir_txt2img_grids"
        for grid, text in shown:
            grid.info["parameters"] = text
            if not p.do_not_save_grid and generator.options.grid_save:
                saved.append(str(generator.save(grid, outdir, first.seed, text, grid=True, p=p)))

        order = sorted(results, key=lambda position: position[::-1])   # grid order: x fastest, then y, then z
        images = [grid for grid, _ in shown]
        texts = [text for _, text in shown]
        prompts = [first.prompt] * len(shown)
        seeds = [first.seed] * len(shown)
        subseeds = [first.subseed] * len(shown)
        if include_lone_images:
            for position in order:
                processed = results[position]
                if pictures[position] is None:
                    continue
                images.append(pictures[position])
                texts.append(infotexts.get(position, ""))
                prompts.append(processed.all_prompts[0] if processed.all_prompts else processed.prompt)
                seeds.append(processed.seed)
                subseeds.append(processed.subseed)
        info = json.loads(first.info) if first.info.startswith("{") else {}
        info.update(all_prompts=prompts, all_seeds=seeds, all_subseeds=subseeds, infotexts=texts,
                    index_of_first_image=len(shown))
        combined = Processed(p, images, seed=first.seed, info=json.dumps(info, ensure_ascii=False, default=str),
                             subseed=first.subseed, all_prompts=prompts, all_seeds=seeds, all_subseeds=subseeds,
                             index_of_first_image=len(shown), infotexts=texts)
        combined.saved = saved
        combined.warnings = list(dict.fromkeys(w for processed in results.values() for w in processed.warnings))
        return combined


def _find_option(name: str, options: list[AxisOption], kind) -> AxisOption:
    """The axis an API client (an index into the tab's list, as A1111) or the UI names; None is Nothing."""
    if kind is None or kind == "":
        return options[0]
    if isinstance(kind, float) and kind.is_integer():
        kind = int(kind)
    if isinstance(kind, int) and not isinstance(kind, bool):
        if not 0 <= kind < len(options):
            raise JobError(f"{TITLE}: {name} type {kind} is out of range (0-{len(options) - 1})")
        option = options[kind]
    else:
        option = next((o for o in options if o.label.lower() == str(kind).strip().lower()), None)
        if option is None:
            raise JobError(f"{TITLE}: unknown {name} type {kind!r}; choose one of "
                           f"{[o.label for o in options if not o.unavailable]}")
    if option.unavailable:
        raise JobError(f"{TITLE}: the {name} axis {option.label!r} is not available: {option.unavailable}")
    return option


def _order(axes) -> list[tuple[int, int, int]]:
    """Cell positions in the order to generate them: the costliest axis outermost (each checkpoint is loaded
    once), then the next; equal costs keep A1111's order (Z outermost, X innermost)."""
    names = sorted((2, 1, 0), key=lambda i: -axes[i].option.cost)   # stable: ties stay Z, Y, X
    ranges = [range(len(axes[i].values)) for i in names]
    positions = []
    for indices in itertools.product(*ranges):
        position = [0, 0, 0]
        for axis_index, value_index in zip(names, indices):
            position[axis_index] = value_index
        positions.append(tuple(position))
    return positions


def _cell_image(processed: Processed):
    """What a cell shows: its image, or its batch's grid when it made several (A1111: processed.images[0])."""
    if not processed.images:
        return None
    if processed.index_of_first_image > 0 or len(processed.images) == 1:
        return processed.images[0]
    return grids.image_grid(processed.images, rows=round(math.sqrt(len(processed.images))))


def _shown(value) -> str:
    return ", ".join(value) if isinstance(value, tuple) else str(value)
