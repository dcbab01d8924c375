"""A1111's `file=` URLs for extensions' own files. Under Gradio 3, A1111's page served `GET /file=<path>` for
files in its folders, and extensions' JavaScript fetches its data that way (tag autocomplete: `file=tmp/...` for
the paths it wrote, then `file=<its folder>/tags/danbooru.csv`). Here only extensions' folders and the web UI's
`tmp/` folder (where A1111 extensions write their temporary files) are served: a relative path is read from the
web UI's folder or the data folder, as A1111 read it from its own; anything else, hidden files and folders
included, is a 404."""
from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse

from modules import paths


def _roots(services) -> list[Path]:
    folders = [Path(paths.script_path) / "tmp"] + [extension.path for extension in services.scripts.extensions
                                                    if extension.enabled]
    return [folder.resolve() for folder in folders]


def served_file(services, text: str) -> Path | None:
    """The file `file=<text>` names, or None where it is not an extension's file."""
    given = Path(text)
    candidates = [given] if given.is_absolute() else [Path(paths.script_path) / given, services.paths.data / given]
    roots = _roots(services)
    for candidate in candidates:
        try:
            resolved = candidate.resolve()
        except (OSError, RuntimeError):
            continue
        for root in roots:
            if resolved.is_relative_to(root) and resolved.is_file() and \
                    not any(part.startswith(".") for part in resolved.relative_to(root).parts):
                return resolved
    return None


def install(app: FastAPI, services) -> None:
    @app.get("/file={path:path}", include_in_schema=False)
    def extension_file(path: str):
        found = served_file(services, path)
        if found is None:
            raise HTTPException(status_code=404, detail="Not Found")
        return FileResponse(found)
