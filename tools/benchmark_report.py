"""The benchmark's results as tables: formatting, targets, and merging them into docs/performance.md.

Pure Python (no torch), so results measured on another machine (JSON lines from `tools/benchmark.py --results`)
can be turned into the docs table anywhere: `tools/benchmark.py --merge-results FILE --write-docs`.

A result record is one JSON object per line:
- {"table": "modes", "kind": "gpu"|"cpu", "run": {...}, "model": "sd15", "model_label": ..., "size": 512,
   "steps": 20, "mode": "default", "status": "ok" | "n/a (...)" | "failed: ...", "ours": {...}, "raw": {...},
   "floor": {"tflop_per_step": 1.607, "peak_tflops": 989.4} | null}
- {"table": "extras", "kind": ..., "run": {...}, "model": ..., "measure": ..., "value": ..., "unit": ...,
   "target": ...}
`ours` / `raw` hold numbers (None where not measured): its, e2e_s, first_image_s, start_to_image_s,
peak_vram_bytes, reserved_vram_bytes, syncs_per_step, px_max, px_mean, graphs.
"""
from __future__ import annotations

import re
from pathlib import Path

GIB = 1024 ** 3
# Targets from issue 8 (docs/performance.md explains them).
COMPILED_ITS_TARGET = {"sd15": 110.0, "sdxl": 23.0}          # stable-fast's published H100 numbers, beaten
VRAM_TARGET_GIB = {("sd15", "lowvram"): 2.0, ("sdxl", "lowvram"): 4.0, ("sdxl", "medvram"): 8.0}
# "Matching the default path within fp16 tolerance": a judgement, not a standard. Compiled kernels sum in another
# order, and 20 sampler steps amplify those last-bit differences; a mean of at most one 8-bit level and no pixel
# off by more than 16 levels is what reads as "the same image" side by side.
PIXEL_MEAN_TOLERANCE = 1.0
PIXEL_MAX_TOLERANCE = 16

MODE_ORDER = ("default", "channelslast", "compiled", "compiled-cudagraphs", "tome", "medvram", "lowvram")
MODEL_ORDER = ("sd15", "sdxl", "tiny")
MODE_COLUMNS = ("model", "mode", "measure", "ours", "raw diffusers", "ours ÷ raw", "target", "met", "run")
EXTRA_COLUMNS = ("model", "measure", "value", "target", "run")


# ---------------------------------------------------------------- runs

def run_label(run: dict) -> str:
    return run["label"]


def describe_run(run: dict) -> str:
    parts = [run.get("device", "?"), f"torch {run.get('torch', '?')}"]
    if run.get("cuda"):
        parts[-1] += f" (CUDA {run['cuda']})"
    parts += [f"diffusers {run.get('diffusers', '?')}", f"transformers {run.get('transformers', '?')}",
              f"Python {run.get('python', '?')}", f"project {run.get('commit', '?')}"]
    if run.get("settings"):
        parts.append(run["settings"])
    return " · ".join(parts)


# ---------------------------------------------------------------- numbers

def _num(value, digits: int) -> str:
    if value is None:
        return "—"
    return f"{value:.{digits}f}"


def _its(value) -> str:
    if value is None:
        return "—"
    return f"{value:.1f}" if value >= 100 else f"{value:.2f}"


def _ratio(ours, raw) -> str:
    if ours is None or raw is None or raw == 0:
        return "—"
    return f"{ours / raw:.2f}×"


def _gib(value) -> str:
    return "—" if value is None else f"{value / GIB:.2f}"


def _met(condition) -> str:
    if condition is None:
        return ""
    return "yes" if condition else "NO"


def floor_percent(its, floor: dict | None):
    """Share of the GPU's dense fp16 peak the UNet reaches: it/s × TFLOP per CFG step ÷ peak TFLOP/s."""
    if its is None or not floor or not floor.get("peak_tflops"):
        return None
    return 100.0 * its * floor["tflop_per_step"] / floor["peak_tflops"]


# ---------------------------------------------------------------- rows

def mode_rows(record: dict) -> list[tuple[str, ...]]:
    """The table rows of one (model, mode) record: (model, mode, measure, ours, raw, ratio, target, met, run)."""
    model, mode, label = record["model"], record["mode"], run_label(record["run"])
    head = (record.get("model_label", model), mode)
    status = record.get("status", "ok")
    if status != "ok":
        return [(*head, "status", status, "", "", "", "", label)]
    ours, raw = record.get("ours") or {}, record.get("raw") or {}
    compiled = mode.startswith("compiled")
    rows = []

    def add(measure, ours_text, raw_text, ratio="—", target="—", met=""):
        rows.append((*head, measure, ours_text, raw_text, ratio, target, met, label))

    its, raw_its = ours.get("its"), raw.get("its")
    if mode == "default":
        add("it/s (batch 1, CFG)", _its(its), _its(raw_its), _ratio(its, raw_its), "≥ 1.0× raw",
            _met(None if its is None or raw_its is None else its >= raw_its))
    elif compiled and model in COMPILED_ITS_TARGET:
        goal = COMPILED_ITS_TARGET[model]
        add("it/s (batch 1, CFG)", _its(its), _its(raw_its), _ratio(its, raw_its), f"≥ {goal:g} it/s",
            _met(None if its is None else its >= goal))
    else:
        add("it/s (batch 1, CFG)", _its(its), _its(raw_its), _ratio(its, raw_its))
    floor = record.get("floor")
    if floor and floor.get("peak_tflops"):
        add(f"% of compute floor ({floor['tflop_per_step']:g} TFLOP/step, {floor['peak_tflops']:g} TF/s)",
            _num(floor_percent(its, floor), 1), _num(floor_percent(raw_its, floor), 1))

    e2e, raw_e2e = ours.get("e2e_s"), raw.get("e2e_s")
    steps = record.get("steps", 20)
    if mode == "default":
        add(f"s per {steps}-step image (end to end)", _num(e2e, 3), _num(raw_e2e, 3), _ratio(e2e, raw_e2e),
            "≤ 1.0× raw", _met(None if e2e is None or raw_e2e is None else e2e <= raw_e2e))
    else:
        add(f"s per {steps}-step image (end to end)", _num(e2e, 3), _num(raw_e2e, 3), _ratio(e2e, raw_e2e))

    add("s from start to first image", _num(ours.get("start_to_image_s"), 1), _num(raw.get("start_to_image_s"), 1),
        _ratio(ours.get("start_to_image_s"), raw.get("start_to_image_s")))
    add("s to load the checkpoint (ours: a load job, warm-up included)", _num(ours.get("load_s"), 2),
        _num(raw.get("load_s"), 2))
    add("s for the first image after load" + (" (compiles)" if compiled else ""),
        _num(ours.get("first_image_s"), 2), _num(raw.get("first_image_s"), 2))

    peak, raw_peak = ours.get("peak_vram_bytes"), raw.get("peak_vram_bytes")
    goal = VRAM_TARGET_GIB.get((model, mode))
    if goal is not None:
        add("peak VRAM GiB (allocated)", _gib(peak), _gib(raw_peak), _ratio(peak, raw_peak), f"≤ {goal:g} GiB",
            _met(None if peak is None else peak <= goal * GIB))
    elif mode == "default":
        add("peak VRAM GiB (allocated)", _gib(peak), _gib(raw_peak), _ratio(peak, raw_peak), "≤ 1.0× raw",
            _met(None if peak is None or raw_peak is None else peak <= raw_peak))
    else:
        add("peak VRAM GiB (allocated)", _gib(peak), _gib(raw_peak), _ratio(peak, raw_peak))

    syncs, raw_syncs = ours.get("syncs_per_step"), raw.get("syncs_per_step")
    if syncs is not None or raw_syncs is not None:   # CUDA, not lowvram
        add("host syncs per sampler step", _num(syncs, 2), _num(raw_syncs, 2), "—", "0",
            _met(None if syncs is None else syncs <= 0))
    if compiled:
        px_max, px_mean = ours.get("px_max"), ours.get("px_mean")
        text = "—" if px_max is None else f"{px_max} (mean {px_mean:.2f})"
        met = None if px_max is None else (px_max <= PIXEL_MAX_TOLERANCE and px_mean <= PIXEL_MEAN_TOLERANCE)
        add("max abs pixel diff vs default (0–255)", text, "—", "—",
            f"≤ {PIXEL_MAX_TOLERANCE}, mean ≤ {PIXEL_MEAN_TOLERANCE:g}", _met(met))
        graphs = ours.get("graphs")
        add("graphs compiled (dynamo)", "—" if graphs is None else str(graphs),
            "—" if raw.get("graphs") is None else str(raw["graphs"]), "—", "> 0", _met(None if graphs is None
                                                                                        else graphs > 0))
    elif mode == "tome" and ours.get("px_max") is not None:   # merging tokens changes the image, by design
        add("max abs pixel diff vs default (0–255)", f"{ours['px_max']} (mean {ours['px_mean']:.2f})", "—")
    for side, values in (("ours", ours), ("raw", raw)):
        if values.get("error"):
            add(f"error ({side})", values["error"], "")
    return rows


def extra_rows(record: dict) -> list[tuple[str, ...]]:
    value = record.get("value")
    digits = record.get("digits", 3)
    text = value if isinstance(value, str) else _num(value, digits)
    met = record.get("met")
    target = record.get("target") or "—"
    if met is not None:
        target = f"{target} ({_met(met)})"
    return [(record.get("model_label", record.get("model", "")), record["measure"], text, target,
             run_label(record["run"]))]


# ---------------------------------------------------------------- tables

def markdown_table(columns, rows) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(text) -> str:
    return str(text).replace("|", "/").replace("\n", " ")


def render(records: list[dict], runs: bool = True) -> str:
    """Run list, modes table and extras table for these records (the stdout report)."""
    listed = {run_label(record["run"]): record["run"] for record in records} if runs else {}
    mode_table = [row for record in records if record["table"] == "modes" for row in mode_rows(record)]
    extras = [row for record in records if record["table"] == "extras" for row in extra_rows(record)]
    return _block(listed, mode_table, extras)


def _block(runs: dict, mode_table: list, extras: list) -> str:
    parts = ["Runs:", ""] if runs else []
    parts += [f"- `{label}`: {describe_run(run) if isinstance(run, dict) else run}" for label, run in runs.items()]
    if mode_table:
        parts += ["", markdown_table(MODE_COLUMNS, mode_table)]
    if extras:
        parts += ["", markdown_table(EXTRA_COLUMNS, extras)]
    return "\n".join(parts)


# ---------------------------------------------------------------- docs merge

def _markers(kind: str) -> tuple[str, str]:
    return (f"<!-- benchmark:{kind}:begin (tools/benchmark.py --write-docs rewrites what is between these "
            f"markers) -->", f"<!-- benchmark:{kind}:end -->")


def _parse_block(text: str) -> tuple[dict, list, list]:
    """Runs, mode rows and extra rows of a block written by `_block` (rows as tuples of cell text)."""
    runs, modes, extras = {}, [], []
    for line in text.splitlines():
        match = re.match(r"- `([^`]+)`: (.*)$", line)
        if match:
            runs[match.group(1)] = match.group(2)
            continue
        if not line.startswith("| ") or line.startswith("|---"):
            continue
        cells = tuple(cell.strip() for cell in line.strip().strip("|").split(" | "))
        if cells in (MODE_COLUMNS, EXTRA_COLUMNS):
            continue
        if len(cells) == len(MODE_COLUMNS):
            modes.append(cells)
        elif len(cells) == len(EXTRA_COLUMNS):
            extras.append(cells)
    return runs, modes, extras


def _sort_key(row) -> tuple[int, int]:
    """Model (by the start of its label: "SD1.5 512²" → sd15), then mode, in the documented order."""
    model = row[0].lower().replace(".", "")
    model_rank = next((i for i, name in enumerate(MODEL_ORDER) if model.startswith(name)), len(MODEL_ORDER))
    mode_rank = MODE_ORDER.index(row[1]) if row[1] in MODE_ORDER else len(MODE_ORDER)
    return model_rank, mode_rank


def merge(existing: tuple[dict, list, list], records: list[dict]) -> tuple[dict, list, list]:
    """New rows replace old ones with the same (model, mode, measure) or (model, measure); others stay."""
    runs, modes, extras = existing
    runs = dict(runs)
    new_modes = [row for r in records if r["table"] == "modes" for row in mode_rows(r)]
    new_extras = [row for r in records if r["table"] == "extras" for row in extra_rows(r)]
    for record in records:
        runs[run_label(record["run"])] = describe_run(record["run"])
    # A (model, mode) measured again replaces all of its old rows (a status row, say, by measured ones).
    replaced = {row[:2] for row in new_modes}
    modes = [row for row in modes if tuple(row[:2]) not in replaced] + new_modes
    keys = {row[:2] for row in new_extras}
    extras = [row for row in extras if tuple(row[:2]) not in keys] + new_extras
    modes.sort(key=_sort_key)   # stable: within a (model, mode), the order the measures were written in
    used = {row[-1] for row in modes} | {row[-1] for row in extras}
    runs = {label: text for label, text in runs.items() if label in used}
    return runs, modes, extras


def write_docs(path: Path, kind: str, records: list[dict]) -> None:
    """Merge these records' rows into the `kind` ("gpu" or "cpu") block of the docs file."""
    begin, end = _markers(kind)
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if begin in text and end in text:
        before, rest = text.split(begin, 1)
        inside, after = rest.split(end, 1)
    else:
        before, inside, after = text.rstrip("\n") + f"\n\n## Benchmark results ({kind})\n\n", "", "\n"
    runs, modes, extras = merge(_parse_block(inside), records)
    body = _block(runs, modes, extras)
    path.write_text(f"{before}{begin}\n{body}\n{end}{after}", encoding="utf-8")
