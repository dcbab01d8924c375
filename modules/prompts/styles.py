"""Prompt styles: A1111's `styles.csv` (name, prompt, negative_prompt), applied to a job's prompts.

Behaviour follows A1111 `modules/styles.py` (v1.10.1): a style text containing `{prompt}` has the user's
prompt put in its place; any other style text is appended after ", " (empty parts dropped, both sides
stripped). Several files may be given (`--styles-file` may repeat and may use `*`/`?` wildcards in the
file name); a missing file is simply empty and a malformed row is skipped, so a broken CSV never stops the
app. Saving rewrites only the file a style belongs to, atomically, in A1111's column order and quoting.
"""
from __future__ import annotations

import csv
import io
import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, replace
from pathlib import Path

from modules.untrusted import user_files

log = logging.getLogger(__name__)

FIELDS = ("name", "prompt", "negative_prompt")   # A1111's column order
PLACEHOLDER = "{prompt}"


@dataclass(frozen=True)
class PromptStyle:
    name: str
    prompt: str
    negative_prompt: str
    path: Path | None = None   # the CSV file it came from / is saved to; None: the default file


def merge_prompts(style_text: str, prompt: str) -> str:
    """A1111 `merge_prompts`: `{prompt}` is replaced by the prompt, otherwise ", "-joined non-empty parts."""
    if PLACEHOLDER in style_text:
        return style_text.replace(PLACEHOLDER, prompt)
    return ", ".join(part for part in (prompt.strip(), style_text.strip()) if part)


def apply_styles_to_prompt(prompt: str, style_texts: list[str]) -> str:
    """Each style in order wraps the result of the previous ones (A1111 `apply_styles_to_prompt`)."""
    for text in style_texts:
        prompt = merge_prompts(text, prompt)
    return prompt


def extract_style_text_from_prompt(style_text: str, prompt: str) -> tuple[bool, str]:
    """A1111 `extract_style_text_from_prompt`: undo `merge_prompts`, if the prompt was made by it.

    ("masterpiece", "1girl, masterpiece") → (True, "1girl");
    ("masterpiece, {prompt}", "masterpiece, 1girl") → (True, "1girl"); no match → (False, prompt).
    """
    stripped_prompt = prompt.strip()
    stripped_style = style_text.strip()
    if PLACEHOLDER in stripped_style:
        left, _, right = stripped_style.partition(PLACEHOLDER)
        if (PLACEHOLDER not in right and len(stripped_prompt) >= len(left) + len(right)
                and stripped_prompt.startswith(left) and stripped_prompt.endswith(right)):
            return True, stripped_prompt[len(left):len(stripped_prompt) - len(right)]
    elif stripped_prompt.endswith(stripped_style):
        rest = stripped_prompt[:len(stripped_prompt) - len(stripped_style)]
        rest = rest.removesuffix(", ")
        return True, rest
    return False, prompt


def extract_original_prompts(style: PromptStyle, prompt: str, negative: str) -> tuple[bool, str, str]:
    """Both texts of a style removed from prompt and negative prompt, or (False, unchanged) if either misses."""
    if not style.prompt and not style.negative_prompt:
        return False, prompt, negative
    matched, new_prompt = extract_style_text_from_prompt(style.prompt, prompt)
    if not matched:
        return False, prompt, negative
    matched, new_negative = extract_style_text_from_prompt(style.negative_prompt, negative)
    if not matched:
        return False, prompt, negative
    return True, new_prompt, new_negative


def _has_wildcard(path: Path) -> bool:
    return any(ch in path.name for ch in "*?[")


def _text(value) -> str:
    return value if isinstance(value, str) else ""


def read_styles_csv(path: Path) -> list[PromptStyle]:
    """The styles of one CSV file; malformed rows (no name, a `#` comment, no prompt column) are skipped."""
    try:
        raw = user_files.read_bytes(path)
    except OSError as error:
        if path.exists():
            log.warning("cannot read styles file %s: %s", path, error)
        return []
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        log.warning("styles file %s is not UTF-8; reading it as Latin-1", path)
        text = raw.decode("latin-1")
    styles: list[PromptStyle] = []
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""), skipinitialspace=True)
        header = [name.strip() if isinstance(name, str) else name for name in (reader.fieldnames or [])]
        reader.fieldnames = header
        if "name" not in header or not ({"prompt", "text"} & set(header)):
            if header:
                log.warning("styles file %s has no name/prompt header (found %s); ignored", path, header)
            return []
        prompt_column = "prompt" if "prompt" in header else "text"   # old A1111 files: name,text
        for line, row in enumerate(reader, start=2):
            name = row.get("name")
            if not isinstance(name, str) or not name.strip() or name.startswith("#"):
                continue
            if not isinstance(row.get(prompt_column), str):
                log.warning("styles file %s, row %d: no prompt column; skipped", path, line)
                continue
            styles.append(PromptStyle(name, row[prompt_column], _text(row.get("negative_prompt")), path))
    except csv.Error as error:
        # A broken quote, a NUL byte...: keep what was read before it.
        log.warning("styles file %s is damaged (%s); kept the %d styles before the damage", path, error, len(styles))
    return styles


def write_styles_csv(path: Path, styles: list[PromptStyle]) -> None:
    """Rewrite one styles file atomically (temp file + os.replace), keeping the old one as `<file>.bak` as A1111 does."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8-sig", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=FIELDS)
            writer.writeheader()
            for style in styles:
                writer.writerow({"name": style.name, "prompt": style.prompt, "negative_prompt": style.negative_prompt})
            handle.flush()
            os.fsync(handle.fileno())
        if path.exists():
            try:
                shutil.copy2(path, path.with_name(path.name + ".bak"))
            except OSError as error:
                log.warning("could not keep a backup of %s: %s", path, error)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class StyleDatabase:
    """Every style of the configured files, by name; a later file's style of the same name wins."""

    def __init__(self, paths: list[Path] | Path):
        if isinstance(paths, (str, Path)):
            paths = [paths]
        self.patterns = [Path(p) for p in paths] or [Path("styles.csv")]
        first = self.patterns[0]
        if _has_wildcard(first):
            # A1111: the first match of a wildcard pattern, else styles.csv in its folder, gets new styles.
            self.default_path = next(iter(sorted(first.parent.glob(first.name))), first.parent / "styles.csv")
        else:
            self.default_path = first
        self._lock = threading.RLock()
        self._styles: dict[str, PromptStyle] = {}
        self.files: list[Path] = []
        self.reload()

    # ------------------------------------------------------------- reading

    def _scan_files(self) -> list[Path]:
        found: list[Path] = [self.default_path]
        for pattern in self.patterns:
            if _has_wildcard(pattern):
                found += sorted(p for p in pattern.parent.glob(pattern.name) if p.is_file())
            else:
                found.append(pattern)
        unique: list[Path] = []
        for path in found:
            if path not in unique:
                unique.append(path)
        return unique

    def reload(self) -> None:
        styles: dict[str, PromptStyle] = {}
        files = self._scan_files()
        for path in files:
            for style in read_styles_csv(path):
                styles[style.name] = style
        with self._lock:
            self.files = files
            self._styles = styles

    def names(self) -> list[str]:
        with self._lock:
            return list(self._styles)

    def items(self) -> list[PromptStyle]:
        with self._lock:
            return list(self._styles.values())

    def get(self, name: str) -> PromptStyle | None:
        with self._lock:
            return self._styles.get(name) if isinstance(name, str) else None

    def unknown(self, names) -> list[str]:
        """The names that are not styles, in the order given (for an error that names them)."""
        with self._lock:
            return [name for name in (names or []) if name not in self._styles]

    # ------------------------------------------------------------- applying

    def apply(self, prompt: str, negative: str, names: list[str] | None) -> tuple[str, str]:
        """Prompt and negative prompt with the named styles applied in order (A1111 `apply_styles_to_prompt`).

        As in A1111, an unknown name acts as an empty style (it only strips the prompt); use `unknown()` to refuse.
        """
        if not names:
            return prompt, negative
        with self._lock:
            chosen = [self._styles.get(name) for name in names]
        prompt = apply_styles_to_prompt(prompt, [s.prompt if s else "" for s in chosen])
        negative = apply_styles_to_prompt(negative, [s.negative_prompt if s else "" for s in chosen])
        return prompt, negative

    def extract(self, prompt: str, negative: str) -> tuple[str, str, list[str]]:
        """A1111 `extract_styles_from_prompt`: the prompts with recognised styles removed, and those styles' names.

        Used when infotext is pasted: the outermost style (applied last) is peeled off first; the names come
        back in the order they were applied.
        """
        extracted: list[str] = []
        candidates = self.items()
        while True:
            found = None
            for style in candidates:
                matched, new_prompt, new_negative = extract_original_prompts(style, prompt, negative)
                if matched:
                    found, prompt, negative = style, new_prompt, new_negative
                    break
            if found is None:
                break
            candidates.remove(found)
            extracted.append(found.name)
        return prompt, negative, list(reversed(extracted))

    # ------------------------------------------------------------- editing

    def _file_of(self, style: PromptStyle | None) -> Path:
        return style.path if style is not None and style.path is not None else self.default_path

    def _write(self, path: Path) -> None:
        write_styles_csv(path, [s for s in self._styles.values() if self._file_of(s) == path])

    def save(self, style: PromptStyle) -> PromptStyle:
        """Add or replace a style and rewrite its file; a replaced style stays in the file it came from."""
        if not isinstance(style.name, str) or not style.name.strip():
            raise ValueError("a style needs a name")
        if style.name.startswith("#"):
            raise ValueError("a style name cannot start with '#': A1111 reads such rows as comments")
        with self._lock:
            existing = self._styles.get(style.name)
            target = style.path if style.path is not None else self._file_of(existing)
            stored = replace(style, prompt=style.prompt or "", negative_prompt=style.negative_prompt or "",
                             path=Path(target))
            self._styles[style.name] = stored
            try:
                self._write(stored.path)
                if existing is not None and self._file_of(existing) != stored.path:
                    self._write(self._file_of(existing))
            except BaseException:
                if existing is None:
                    self._styles.pop(style.name, None)
                else:
                    self._styles[style.name] = existing
                raise
            if stored.path not in self.files:
                self.files.append(stored.path)
            return stored

    def delete(self, name: str) -> bool:
        """Remove a style and rewrite its file; False when there was no such style."""
        with self._lock:
            existing = self._styles.pop(name, None)
            if existing is None:
                return False
            try:
                self._write(self._file_of(existing))
            except BaseException:
                self._styles[name] = existing
                raise
            return True

    # ------------------------------------------------------------- API

    def api_list(self) -> list[dict]:
        """`GET /sdapi/v1/prompt-styles`: [{"name", "prompt", "negative_prompt"}]."""
        return [{"name": s.name, "prompt": s.prompt, "negative_prompt": s.negative_prompt} for s in self.items()]

