"""Loading scripts and extensions: A1111's `scripts.load_scripts`, with each failure isolated and reported.

`ScriptHost` owns what was loaded: the txt2img and img2img `ScriptRunner`s, the callback registry, the
extensions' JavaScript and CSS, and the list of errors the Extensions tab shows. Services own one host.

Order: our `scripts/` folder first, then every enabled extension's `scripts/*.py` by extension and file
name, reordered by `metadata.ini` (`[scripts/x.py] Before/After/Requires`). Each file is imported with its
extension's folder on `sys.path` (as A1111 does, so `from scripts.helper import ...` inside an extension
works); `Script` subclasses defined in it are instantiated once per tab.
"""
from __future__ import annotations

import importlib.util
import inspect
import logging
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from modules import script_callbacks, scripts
from modules.addons import pydantic_v1_idioms
from modules.script_callbacks import CallbackRegistry, error_line
from modules.scripts import Script, ScriptRunner

log = logging.getLogger(__name__)


@dataclass
class LoadError:
    extension: str        # extension name, or "scripts" for the project's own
    file: str
    message: str          # the exception's last line; the full traceback goes to the log


@dataclass(frozen=True)
class ScriptFile:
    key: str              # "<extension>/scripts/<file>.py", what metadata.ini's Before/After name
    path: Path
    basedir: Path         # the extension's folder (the project root for scripts/)
    extension: object = None   # modules.addons.extensions.Extension, None for scripts/


@dataclass
class ScriptHost:
    callbacks: CallbackRegistry = field(default_factory=CallbackRegistry)
    txt2img: ScriptRunner = field(default_factory=lambda: ScriptRunner(is_img2img=False))
    img2img: ScriptRunner = field(default_factory=lambda: ScriptRunner(is_img2img=True))
    extensions: list = field(default_factory=list)          # every extension found, enabled or not
    errors: list[LoadError] = field(default_factory=list)
    javascript: list[Path] = field(default_factory=list)     # extensions' javascript/*.js, in load order
    stylesheets: list[Path] = field(default_factory=list)    # extensions' style.css
    loaded: bool = False
    registered: set = field(default_factory=set)   # (file, class name) of every Script class instantiated

    def runner(self, is_img2img: bool) -> ScriptRunner:
        return self.img2img if is_img2img else self.txt2img

    # What the generator asks of the scripts (generation.generator.Scripts).
    def take_part(self, request) -> bool:
        """The request's tab has always-on scripts, or the request chose a dropdown script."""
        return bool(self.runner(bool(request.init_images)).alwayson_scripts or request.selected_script)

    def run(self, generator, request, job):
        from modules.addons.script_runs import run_with_scripts   # it imports modules.processing, which needs us not

        return run_with_scripts(generator, request, job, self.runner(bool(request.init_images)))

    def failures(self) -> list[LoadError]:
        """Every failure to list in the Extensions tab: imports and preload.py (`errors`), then each script's
        ui() and hooks and each callback that raised since start, with the file and the error's line."""
        listed = list(self.errors)
        seen = {(error.file, error.message) for error in listed}
        found = [*self.txt2img.failures.items(), *self.img2img.failures.items(), *self.callbacks.failures.items()]
        for (file, where), message in found:
            entry = LoadError(self._owner(file), f"{Path(file).name} {where}", message)
            if (entry.file, entry.message) not in seen:
                seen.add((entry.file, entry.message))
                listed.append(entry)
        return listed

    def _owner(self, file: str) -> str:
        for extension in self.extensions:
            try:
                if Path(file).resolve().is_relative_to(Path(extension.path).resolve()):
                    return extension.name
            except (OSError, ValueError):
                continue
        return "scripts"

    def unload(self) -> None:
        """A1111's on_script_unloaded: extensions release what they hold (shutdown, restart)."""
        self.callbacks.fire("script_unloaded")


def load(host: ScriptHost, builtin_scripts: Path, extensions: list) -> ScriptHost:
    """Import the scripts of `builtin_scripts` and of each enabled extension into `host`."""
    host.loaded = True
    host.extensions = list(extensions)
    names_enabled = {extension.name for extension in extensions if extension.enabled}
    host.errors += [error for error in preload_errors
                    if error.extension in names_enabled and error not in host.errors]
    enabled = [extension for extension in extensions if extension.enabled]
    names = {extension.metadata.canonical_name for extension in enabled}
    usable = []
    for extension in enabled:
        missing = [name for name in extension.metadata.requires if name.lower() not in names]
        if missing:
            host.errors.append(LoadError(extension.name, "metadata.ini", f"requires missing extension(s) {missing}"))
            continue
        usable.append(extension)
    files = _script_files(builtin_scripts, usable)
    _prepare_gradio(host)
    pydantic_v1_idioms.install()   # extensions' models written for A1111's pydantic 1
    scripts.scripts_data.clear()
    script_callbacks.use_registry(host.callbacks)
    for script_file in _ordered(files):
        _load_file(host, script_file)
    _order_callbacks(host.callbacks, usable)
    for extension in usable:
        host.javascript += sorted(path for path in (extension.path / "javascript").glob("*.js") if path.is_file())
        if (extension.path / "style.css").is_file():
            host.stylesheets.append(extension.path / "style.css")
    return host


def _prepare_gradio(host: ScriptHost) -> None:
    """Extensions' scripts are Gradio code written for A1111's Gradio 3: its idioms are translated before they are
    imported, and every component the UI builds is announced to their component hooks. (The web UI's edge is
    imported here, not at the top: loading extensions is where Gradio code enters the process.)"""
    import modules.ui_components  # noqa: F401 - imported before extensions, as in A1111 (see below)
    from modules.ui import component_hooks, gradio3, gradio3_blocks

    # Extensions' copies of A1111's components claim `__module__ = "modules.ui_components"`; Gradio's
    # inspect.getfile() of such a class fails unless that module is loaded.
    gradio3.install()
    gradio3_blocks.install()
    component_hooks.install(host)


# preload.py runs while the flags are parsed, before the services (and their ScriptHost) exist: its failures wait
# here for `load`, which lists them with the others. Set anew by each `preload` call (one per start).
preload_errors: list[LoadError] = []


def preload(parser, extensions: list) -> None:
    """Each enabled extension's preload.py: `preload(parser)` adds its command-line flags (A1111). A failing
    one is logged, skipped and kept in `preload_errors` for the Extensions tab."""
    preload_errors.clear()
    for extension in extensions:
        path = extension.path / "preload.py"
        if not extension.enabled or not path.is_file():
            continue
        try:
            module = _import(ScriptFile(f"{extension.metadata.canonical_name}/preload.py", path, extension.path,
                                        extension))
            if hasattr(module, "preload"):
                module.preload(parser)
        except BaseException as error:   # SystemExit from a preload.py too: report, go on
            if isinstance(error, KeyboardInterrupt):
                raise
            log.error("Error running preload.py of extension %s:\n%s", extension.name, traceback.format_exc())
            preload_errors.append(LoadError(extension.name, "preload.py", error_line(error)))


def _script_files(builtin_scripts: Path, extensions: list) -> list[ScriptFile]:
    files = [ScriptFile(f"scripts/{path.name}", path, builtin_scripts.parent)
             for path in sorted(builtin_scripts.glob("*.py")) if path.is_file()] if builtin_scripts.is_dir() else []
    for extension in extensions:
        folder = extension.path / "scripts"
        if folder.is_dir():
            files += [ScriptFile(f"{extension.metadata.canonical_name}/scripts/{path.name}", path, extension.path,
                                 extension) for path in sorted(folder.glob("*.py")) if path.is_file()]
    return files


def _ordered(files: list[ScriptFile]) -> list[ScriptFile]:
    """Load order after metadata.ini's Before/After/Requires; unknown names in them are ignored."""
    by_key = {item.key: item for item in files}
    by_name: dict[str, list[str]] = {}
    for item in files:
        by_name.setdefault(item.path.name, []).append(item.key)

    def resolve(reference: str) -> list[str]:
        reference = reference.strip()
        return [reference] if reference in by_key else by_name.get(reference, [])

    after: dict[str, set[str]] = {item.key: set() for item in files}   # key → keys that must load first
    for item in files:
        if item.extension is None:
            continue
        requires, before, later = item.extension.metadata.script_order(f"scripts/{item.path.name}")
        for reference in [*requires, *later]:
            after[item.key].update(key for key in resolve(reference) if key != item.key)
        for reference in before:
            for key in resolve(reference):
                if key != item.key:
                    after[key].add(item.key)
    return [by_key[key] for key in topological_sort([item.key for item in files], after)]


def _order_callbacks(callbacks: CallbackRegistry, extensions: list) -> None:
    """metadata.ini's `[callbacks/<callback name>] Before= / After=` (any extension may order any callback)."""
    for kind in script_callbacks.CALLBACK_NAMES:
        names = [item.name for item in callbacks.callbacks(kind)]
        if len(names) < 2:
            continue
        after: dict[str, set[str]] = {name: set() for name in names}
        for extension in extensions:
            for name in names:
                before_these, after_these = extension.metadata.callback_order(name)
                after[name].update(other for other in after_these if other in after and other != name)
                for other in before_these:
                    if other in after and other != name:
                        after[other].add(name)
        callbacks.reorder(kind, topological_sort(names, after))


def topological_sort(keys: list[str], after: dict[str, set[str]]) -> list[str]:
    """`keys` in their order, except that each comes after the keys in `after[key]`; cycles are broken by
    keeping the original order (a misconfigured metadata.ini must not stop loading)."""
    done: list[str] = []
    placed: set[str] = set()
    visiting: set[str] = set()

    def visit(key: str) -> None:
        if key in placed or key in visiting:
            return
        visiting.add(key)
        for first in sorted(after.get(key, ()), key=keys.index):
            visit(first)
        visiting.discard(key)
        placed.add(key)
        done.append(key)

    for key in keys:
        visit(key)
    return done


def _load_file(host: ScriptHost, script_file: ScriptFile) -> None:
    owner = script_file.extension.name if script_file.extension is not None else "scripts"
    host.callbacks.loading_script = str(script_file.path)
    host.callbacks.loading_extension = (script_file.extension.metadata.canonical_name
                                        if script_file.extension is not None else "base")
    scripts._loading_basedir = str(script_file.basedir)
    saved_path = list(sys.path)
    sys.path.insert(0, str(script_file.basedir))
    try:
        module = _import(script_file)
        classes = [value for value in vars(module).values()
                   if isinstance(value, type) and issubclass(value, Script) and value is not Script
                   and _defined_under(value, script_file.basedir)]
        for cls in classes:
            origin = (inspect.getfile(cls), cls.__qualname__)   # one class imported by two files: once
            if origin in host.registered:
                continue
            host.registered.add(origin)
            scripts.scripts_data.append(scripts.ScriptClassData(cls, str(script_file.path), str(script_file.basedir),
                                                                module))
            for runner in (host.txt2img, host.img2img):
                script = cls()
                script.filename = str(script_file.path)
                if not isinstance(script.title(), str):   # the UI and API name scripts by it: fail here, not there
                    raise TypeError(f"{cls.__name__}.title() returned {type(script.title()).__name__}, not str")
                runner.add(script)
    except BaseException as error:   # SystemExit and KeyboardInterrupt from a script file too: report, go on
        if isinstance(error, KeyboardInterrupt):
            raise
        log.error("Error loading script %s:\n%s", script_file.path, traceback.format_exc())
        host.errors.append(LoadError(owner, script_file.path.name, error_line(error)))
        host.callbacks.remove_script(str(script_file.path))
        scripts.scripts_data[:] = [item for item in scripts.scripts_data if item.path != str(script_file.path)]
        for runner in (host.txt2img, host.img2img):
            runner.scripts = [s for s in runner.scripts if s.filename != str(script_file.path)]
            runner.alwayson_scripts = [s for s in runner.alwayson_scripts if s.filename != str(script_file.path)]
            runner.selectable_scripts = [s for s in runner.selectable_scripts
                                         if s.filename != str(script_file.path)]
    finally:
        sys.path[:] = saved_path
        scripts._loading_basedir = ""
        host.callbacks.loading_script = host.callbacks.loading_extension = ""


def _defined_under(cls: type, folder: Path) -> bool:
    """Whether a class comes from this extension's own files (defined in the script or imported from its
    package, as A1111 registers them), not from another extension or the project's base class."""
    try:
        return Path(inspect.getfile(cls)).resolve().is_relative_to(folder.resolve())
    except (TypeError, OSError):
        return False


def _import(script_file: ScriptFile):
    # A unique module name per file, so two extensions' scripts/main.py do not replace each other.
    name = "webui_script_" + "".join(c if c.isalnum() else "_" for c in script_file.key)
    spec = importlib.util.spec_from_file_location(name, script_file.path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module   # dataclasses and pickling look their module up there
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module

