"""A1111's `file=` URLs for extensions' own files. Under Gradio 3, A1111's page served `GET /file=<path>` for
files in its folders, and extensions' JavaScript fetches its data that way (tag autocomplete: `file=tmp/...` for
the paths it wrote, then `file=<its folder>/tags/danbooru.csv`). Here only extensions' folders and the web UI's
`tmp/` folder (where A1111 extensions write their temporary files) are served: a relative path is read from the
web UI's folder or the data folder, as A1111 read it from its own; anything else, hidden files and folders
included, is a 404. `/file=` only redirects to Gradio's own file route, which the page's login (--gradio-auth)
and the download rules for non-image files (api/middleware.py) cover; `served_roots` are added to Gradio's
allowed paths, their hidden entries to its blocked ones."""
from __future__ import annotations

from pathlib import Path

from urllib.parse import quote

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse

from modules import paths


def served_roots(services) -> list[Path]:
    folders = [Path(paths.script_path) / "tmp"] + [extension.path for extension in services.scripts.extensions
                                                    if extension.enabled]
    return [folder.resolve() for folder in folders]


def served_file(services, text: str) -> Path | None:
    """The file `file=<text>` names, or None where it is not an extension's file."""
    given = Path(text)
    candidates = [given] if given.is_absolute() else [Path(paths.script_path) / given, services.paths.data / given]
    roots = served_roots(services)
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


def hidden_entries(services) -> list[Path]:
    """The hidden files and folders directly in the served roots (`.git`, `.env`, ...): kept from Gradio too."""
    return [entry for root in served_roots(services) if root.is_dir() for entry in root.iterdir()
            if entry.name.startswith(".")]


def install(app: FastAPI, services) -> None:
    """`GET /file=<path>`: a page route (not part of the API), answered with a redirect to Gradio's file route."""
    async def extension_file(request: Request):
        found = served_file(services, request.path_params["path"])
        if found is None:
            return PlainTextResponse("Not Found", status_code=404)
        return RedirectResponse("/gradio_api/file=" + quote(str(found)), status_code=307)

    app.add_route("/file={path:path}", extension_file, methods=["GET"], include_in_schema=False)
