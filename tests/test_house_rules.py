"""The house rules of docs/architecture.md that a change can break without any other test noticing: the map names
files that exist, the backend imports no web framework, modules/ keeps only A1111's public names and the
foundation at its top, and no Python file grows past 500 lines."""
from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"


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


def test_modules_top_level_holds_at_most_15_files():
    top = sorted(path.name for path in (ROOT / "modules").glob("*.py"))
    assert len(top) <= 15, top


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
