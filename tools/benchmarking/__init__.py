"""The parts of tools/benchmark.py (the command, its options and its docs): what is measured (cases), the
checkpoints it writes, the measuring helpers, each side of a mode in its own process (ours, raw_diffusers,
workers), webui.py started as a server (servers), one (model, mode) (modes), the LoRA, prompt, switching and
start-up figures (extras), and the whole run with its results files (run). benchmark_report.py, beside them, turns
the results into tables."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCHMARK_SCRIPT = ROOT / "tools" / "benchmark.py"   # workers run it again with --worker
