"""tools/benchmark.py: a quick CPU run prints every mode beside raw diffusers, keeps its results as JSON lines, and
merges them into the docs table, replacing the rows it measured again and keeping the others."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import benchmark_report as report  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

MEASURED = ("it/s (batch 1, CFG)", "s per 8-step image (end to end)", "s from start to first image",
            "s to load the checkpoint (ours: a load job, warm-up included)", "s for the first image after load")


def table_rows(text: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip().strip("|").split(" | ")]
            for line in text.splitlines() if line.startswith("| ") and not line.startswith("| model |")]


def test_quick_run_measures_our_default_path_beside_raw_diffusers_and_writes_the_docs(tmp_path):
    results = tmp_path / "results.jsonl"
    run = subprocess.run([sys.executable, "tools/benchmark.py", "--quick", "--modes", "default,medvram,lowvram",
                          "--no-extras", "--results", str(results)], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    final = run.stdout.rsplit("Runs:", 1)[1]
    cuda = torch.cuda.is_available()
    assert ("CPU (" in final.splitlines()[2]) != cuda   # the run line names the device and versions
    rows = {(row[1], row[2]): row for row in table_rows(final)}
    for mode in ("default", "medvram", "lowvram") if cuda else ("default",):
        for measure in MEASURED + (("peak VRAM GiB (allocated)",) if cuda else ()):
            ours, raw = rows[(mode, measure)][3:5]
            assert float(ours) > 0 and float(raw) > 0, (mode, measure, ours, raw)
    its = rows[("default", "it/s (batch 1, CFG)")]
    assert its[6] == "≥ 1.0× raw" and its[7] in ("yes", "NO")     # the target, and whether it was met
    if not cuda:
        assert rows[("default", "peak VRAM GiB (allocated)")][3] == "—"
        for mode in ("medvram", "lowvram"):
            assert rows[(mode, "status")][3] == "n/a (CUDA only)"

    records = [json.loads(line) for line in results.read_text().splitlines()]
    kind = "gpu" if cuda else "cpu"
    assert [(r["model"], r["mode"], r["kind"]) for r in records] == [
        ("tiny", "default", kind), ("tiny", "medvram", kind), ("tiny", "lowvram", kind)]

    docs = tmp_path / "performance.md"
    docs.write_text("# Performance\n\nBefore.\n\n" + "\n".join(report._markers(kind)) + "\n\nAfter.\n")
    for _ in range(2):   # merging the same results twice leaves one copy of each row
        merge = subprocess.run([sys.executable, "tools/benchmark.py", "--merge-results", str(results),
                                "--write-docs", str(docs)], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert merge.returncode == 0, merge.stderr
    text = docs.read_text()
    assert text.startswith("# Performance\n\nBefore.\n") and text.endswith("\nAfter.\n")
    written = table_rows(text)
    assert len(written) == len({tuple(row[:3]) for row in written}) == len(table_rows(final))
    assert records[0]["run"]["label"] in text


def _record(mode: str, label: str, its: float, status: str = "ok") -> dict:
    run = {"label": label, "device": "NVIDIA H100 80GB HBM3", "torch": "2.11.0", "cuda": "13.0"}
    return {"table": "modes", "kind": "gpu", "run": run, "model": "sd15", "model_label": "SD1.5 512²",
            "size": 512, "steps": 20, "mode": mode, "status": status,
            "ours": {"its": its, "e2e_s": 0.5, "peak_vram_bytes": 3 * 2 ** 30},
            "raw": {"its": 50.0, "e2e_s": 0.6, "peak_vram_bytes": 4 * 2 ** 30},
            "floor": {"tflop_per_step": 1.607, "peak_tflops": 989.4}}


def test_docs_merge_replaces_a_measured_mode_and_keeps_the_others(tmp_path):
    docs = tmp_path / "performance.md"
    report.write_docs(docs, "gpu", [_record("default", "run 1", 60.0), _record("medvram", "run 1", 0, "n/a")])
    report.write_docs(docs, "gpu", [_record("medvram", "run 2", 20.0)])
    rows = table_rows(docs.read_text())
    default = {row[2]: row for row in rows if row[1] == "default"}
    assert default["it/s (batch 1, CFG)"][3:8] == ["60.00", "50.00", "1.20×", "≥ 1.0× raw", "yes"]
    assert default["peak VRAM GiB (allocated)"][3:8] == ["3.00", "4.00", "0.75×", "≤ 1.0× raw", "yes"]
    floor = next(row for name, row in default.items() if name.startswith("% of compute floor"))
    assert floor[3] == "9.7"   # 60 it/s x 1.607 TFLOP / 989.4 TF/s
    medvram = [row for row in rows if row[1] == "medvram"]
    assert medvram and all(row[-1] == "run 2" for row in medvram)   # the n/a row of run 1 is gone
    assert [row[1] for row in rows].index("medvram") > [row[1] for row in rows].index("default")
    assert "- `run 1`: NVIDIA H100" in docs.read_text() and "- `run 2`:" in docs.read_text()
    report.write_docs(docs, "gpu", [_record("default", "run 2", 61.0)])
    assert "`run 1`" not in docs.read_text()   # no row refers to it any more


def test_time_budget_reports_what_it_could_not_measure(tmp_path):
    results = tmp_path / "results.jsonl"
    run = subprocess.run([sys.executable, "tools/benchmark.py", "--quick", "--modes", "default,medvram",
                          "--time-budget", "1", "--results", str(results)], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-4000:]
    assert "LoRAs, prompt encoding, switching, start-up: not measured (time budget)" in run.stdout
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert [r["status"] for r in records] == ["not measured (time budget spent)",
                                              "n/a (CUDA only)" if not torch.cuda.is_available()
                                              else "not measured (time budget spent)"]


def test_a_worker_past_the_budget_is_stopped(tmp_path):
    import benchmark

    spec = {"side": "raw", "mode": "default", "checkpoint": str(tmp_path / "none.safetensors")}
    result = benchmark.run_worker(spec, tmp_path, "late", timeout=0.2)   # less than importing torch takes
    assert result["error"].startswith("stopped at the time budget after 0 s")


def test_plan_orders_model_mode_pairs():
    import benchmark

    options = benchmark.parse_args(["--full", "--plan", "sd15:default, sdxl:default,sd15:compiled-cudagraphs"])
    assert options.plan == [("sd15", "default"), ("sdxl", "default"), ("sd15", "compiled-cudagraphs")]
    assert options.models == ["sd15", "sdxl"] and options.modes == ["default", "compiled-cudagraphs"]
    for wrong in (["--plan", "sd15:default"], ["--full", "--plan", "sd15"], ["--full", "--plan", "sd3:default"]):
        with pytest.raises(SystemExit):
            benchmark.parse_args(wrong)
