"""X/Y/Z plot (A1111's scripts/xyz_grid.py): one generation per combination of up to three axes of values,
drawn as a labelled grid (one per Z value, side by side, when there is a Z axis).

The axes (A1111's list, in its order) are in modules/addons/xyz_axes.py; the names A1111 extensions use from
this module (xyz_grid.AxisOption, xyz_grid.apply_field, ...) are imported here. Every value is checked before the
first image: each axis value alone, then every cell, through the request validator, so a misspelt sampler fails at
once, naming it.
"""
import copy
import itertools
import json
import math
from dataclasses import dataclass

from modules import scripts
from modules.addons.xyz_axes import (AXIS_OPTIONS, PERMUTATIONS, TITLE, AxisOption, apply_checkpoint,
                                     apply_face_restore, apply_field, apply_order, apply_override, apply_prompt,
                                     apply_size, apply_styles, apply_vae, axis_options, checkpoint_names, do_nothing,
                                     find_option, format_nothing, format_remove_path, format_value,
                                     format_value_add_label, format_value_join_list)
from modules.output import grids
from modules.diffusion import noise
from modules.jobs import JobError
from modules.processing import Processed, process_images

# A1111 extensions reach the axes through this module (xyz_grid.AxisOption, xyz_grid.apply_field, ...).
__all__ = ["Script", "TITLE", "PERMUTATIONS", "AxisOption", "AXIS_OPTIONS", "axis_options",
           "apply_field", "apply_override", "apply_prompt", "apply_order", "apply_checkpoint", "apply_vae",
           "apply_face_restore", "apply_styles", "apply_size", "do_nothing", "format_value_add_label", "format_value",
           "format_value_join_list", "format_nothing", "format_remove_path", "checkpoint_names"]


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
        option = find_option(name, options, kind)
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
