"""Extensions: discovery, metadata.ini, install from a git URL, updates, enable/disable, and the Extensions tab's
handlers. A local git repository built here stands in for GitHub (file:// URLs are switched on for tests only)."""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import git
import gradio as gr
import pytest

from modules import paths as paths_module
from modules.addons import extensions
from modules.addons.script_loading import ScriptHost
from modules.cmd_args import parse_args
from modules.options import Options
from modules.ui import extensions as tab
from tests.fixtures.server_control import RecordingControl

SOMEONE = git.Actor("someone", "someone@example.com")
INSTALL_PY = """import os, pathlib
pathlib.Path("installed.txt").write_text(os.environ.get("PYTHONPATH", ""))
print("tiny extension installed")
"""


def commit_all(repo: git.Repo, message: str) -> git.Commit:
    repo.git.add(all=True)
    return repo.index.commit(message, author=SOMEONE, committer=SOMEONE)


@pytest.fixture
def upstream(tmp_path) -> git.Repo:
    """A tiny extension's repository: scripts/x.py, install.py (writes installed.txt) and metadata.ini."""
    folder = tmp_path / "upstream" / "sd-webui-tiny.git"
    repo = git.Repo.init(folder, initial_branch="main")
    (folder / "scripts").mkdir()
    (folder / "scripts" / "x.py").write_text("VALUE = 1\n")
    (folder / "install.py").write_text(INSTALL_PY)
    (folder / "metadata.ini").write_text("[Extension]\nName = Tiny-Ext\n")
    commit_all(repo, "first")
    return repo


@pytest.fixture
def file_urls(monkeypatch):
    monkeypatch.setattr(extensions, "ALLOW_FILE_URLS", True)


def make_services(tmp_path, *flags: str) -> SimpleNamespace:
    """What the tab's handlers use: flags, folders (built-in ones in tmp_path too), settings, load errors."""
    args = parse_args(["--data-dir", str(tmp_path / "data"), *flags])
    paths = dataclasses.replace(paths_module.from_args(args), extensions_builtin=tmp_path / "builtin")
    paths.extensions.mkdir(parents=True, exist_ok=True)
    return SimpleNamespace(args=args, paths=paths, options=Options(paths.config_file),
                           scripts=ScriptHost())


def names_in(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


# ---------------------------------------------------------------- install from URL

def test_install_from_a_local_repository_clones_runs_install_py_and_is_listed(tmp_path, upstream, file_urls):
    services = make_services(tmp_path)
    url = Path(upstream.working_dir).as_uri()
    extension, installer = extensions.install_from_url(services.paths, url)

    target = services.paths.extensions / "sd-webui-tiny"
    assert extension.path == target and (target / "scripts" / "x.py").is_file()
    assert names_in(services.paths.extensions) == ["sd-webui-tiny"]      # no temporary folder left
    ok, output = installer
    assert ok and "tiny extension installed" in output
    assert (target / "installed.txt").read_text() == str(paths_module.PROJECT_ROOT)   # PYTHONPATH = project

    [listed] = extensions.discover(services.paths, services.options, services.args)
    head = upstream.head.commit
    assert (listed.name, listed.enabled, listed.is_builtin, listed.canonical_name) == (
        "sd-webui-tiny", True, False, "tiny-ext")
    assert (listed.remote, listed.branch, listed.commit_hash, listed.version, listed.commit_date) == (
        url, "main", head.hexsha, head.hexsha[:8], head.committed_date)


def test_install_from_url_into_a_chosen_folder_and_branch(tmp_path, upstream, file_urls):
    upstream.git.checkout("-b", "dev")
    (Path(upstream.working_dir) / "dev.txt").write_text("dev")
    dev = commit_all(upstream, "dev only")
    upstream.git.checkout("main")
    services = make_services(tmp_path)
    extension, _ = extensions.install_from_url(services.paths, Path(upstream.working_dir).as_uri(), branch="dev",
                                               dirname="my-tiny")
    assert extension.path == services.paths.extensions / "my-tiny"
    assert (extension.branch, extension.commit_hash) == ("dev", dev.hexsha)


@pytest.mark.parametrize("url, dirname, field", [
    ("http://github.com/someone/ext.git", None, "URL"),
    ("ext::sh -c touch% /tmp/pwned", None, "URL"),
    ("git@github.com:someone/ext.git", None, "URL"),
    ("https://[::1/ext.git", None, "URL"),
    ("https:///no-host.git", None, "URL"),
    ("https://github.com/someone/ext.git", "../x", "Local directory name"),
    ("https://github.com/someone/ext.git", ".x", "Local directory name"),
    ("https://github.com/someone/ext.git", "-x", "Local directory name"),
    ("https://github.com/someone/..", None, "URL"),
    ("https://github.com/someone/existing.git", None, "Local directory name"),
    ("https://github.com/someone/ext.git", "existing", "Local directory name"),
])
def test_install_from_url_refuses_bad_urls_and_names_before_writing_anything(tmp_path, url, dirname, field):
    services = make_services(tmp_path)
    (services.paths.extensions / "existing").mkdir()
    with pytest.raises(extensions.ExtensionError, match=f"^{field}:"):
        extensions.install_from_url(services.paths, url, dirname=dirname)
    assert names_in(services.paths.extensions) == ["existing"]


def test_file_urls_are_refused_outside_tests(tmp_path, upstream):
    services = make_services(tmp_path)
    with pytest.raises(extensions.ExtensionError, match="^URL: .* is not an https:// git URL"):
        extensions.install_from_url(services.paths, Path(upstream.working_dir).as_uri())
    assert names_in(services.paths.extensions) == []


def test_a_failed_clone_leaves_nothing_behind(tmp_path, file_urls):
    services = make_services(tmp_path)
    with pytest.raises(extensions.ExtensionError, match="Cloning .* failed"):
        extensions.install_from_url(services.paths, (tmp_path / "no-such-repo").as_uri())
    assert names_in(services.paths.extensions) == []


@pytest.mark.parametrize("submodule_url", ["ext::sh -c touch% {marker}", "ssh://127.0.0.1:1/x.git"])
def test_a_submodule_over_a_refused_protocol_fails_the_install_and_runs_nothing(tmp_path, upstream, file_urls,
                                                                              submodule_url):
    """.gitmodules is the clone's own content: its URLs get the same protocol allow-list (no ext::, no ssh)."""
    folder = Path(upstream.working_dir)
    marker = tmp_path / "pwned"
    submodule_url = submodule_url.format(marker=marker)
    (folder / ".gitmodules").write_text(f'[submodule "evil"]\n\tpath = evil\n\turl = {submodule_url}\n')
    upstream.git.add(".gitmodules")
    upstream.git.update_index("--add", "--cacheinfo", f"160000,{upstream.head.commit.hexsha},evil")
    upstream.index.commit("add a submodule", author=SOMEONE, committer=SOMEONE)
    services = make_services(tmp_path)
    with pytest.raises(extensions.ExtensionError, match="Cloning .* failed") as refused:
        extensions.install_from_url(services.paths, folder.as_uri())
    assert "not allowed" in str(refused.value)
    assert not marker.exists()
    assert names_in(services.paths.extensions) == []


# ---------------------------------------------------------------- access from the network

def test_changes_are_refused_on_a_reachable_server_unless_allowed(tmp_path, upstream, file_urls):
    url = Path(upstream.working_dir).as_uri()
    for flags in (["--listen"], ["--server-name", "0.0.0.0"], ["--listen", "--gradio-auth", "u:p"]):
        services = make_services(tmp_path, *flags)
        with pytest.raises(extensions.ExtensionError, match="--enable-insecure-extension-access"):
            extensions.check_access(services.args)
        message, *_ = tab.install(services, url, "", "")
        assert "Extension access is disabled" in message
        assert "disabled because the server is reachable" in tab.access_note(services.args)
    assert names_in(services.paths.extensions) == []

    services = make_services(tmp_path, "--listen", "--enable-insecure-extension-access")
    message, *_ = tab.install(services, url, "", "")
    assert "Installed into" in message and "install.py ran" in message
    assert names_in(services.paths.extensions) == ["sd-webui-tiny"]
    assert tab.access_note(services.args) == ""


def test_the_tab_handlers_refuse_every_change_under_listen(tmp_path, upstream, file_urls, monkeypatch):
    monkeypatch.setattr(tab, "RESTART_DELAY", 0.01)
    local = make_services(tmp_path)
    extensions.install_from_url(local.paths, Path(upstream.working_dir).as_uri())
    listening = make_services(tmp_path, "--listen")
    control = RecordingControl()

    message = tab.apply(listening, control, [], "all", [])
    assert "Extension access is disabled" in message
    message, *_ = tab.check_updates(listening, {})
    assert "Extension access is disabled" in message
    time.sleep(0.2)
    assert control.calls == [] and not listening.paths.config_file.exists()
    # listing stays allowed
    table, enabled, disable_all = tab.listing(listening)
    assert "sd-webui-tiny" in table and enabled["value"] == ["sd-webui-tiny"] and disable_all == "none"


# ---------------------------------------------------------------- updates

def test_check_for_updates_sees_a_new_upstream_commit_and_update_moves_head(tmp_path, upstream, file_urls):
    services = make_services(tmp_path)
    installed, _ = extensions.install_from_url(services.paths, Path(upstream.working_dir).as_uri())
    assert extensions.check_for_updates(installed) is False and installed.status == "latest"

    (Path(upstream.working_dir) / "scripts" / "x.py").write_text("VALUE = 2\n")
    newer = commit_all(upstream, "second")
    (installed.path / "scripts" / "x.py").write_text("local edit")
    [found] = extensions.discover(services.paths, services.options, services.args)
    assert extensions.check_for_updates(found) is True and found.status == "new commits"

    assert extensions.update(found) == newer.hexsha
    [found] = extensions.discover(services.paths, services.options, services.args)
    assert found.commit_hash == newer.hexsha
    assert (found.path / "scripts" / "x.py").read_text() == "VALUE = 2\n"   # local edits are lost, as A1111
    assert extensions.check_for_updates(found) is False


def test_the_tab_checks_then_updates_the_ticked_extensions(tmp_path, upstream, file_urls):
    services = make_services(tmp_path)
    extensions.install_from_url(services.paths, Path(upstream.working_dir).as_uri())
    newer = commit_all(upstream, "second")
    message, table, to_update, statuses = tab.check_updates(services, {})
    assert statuses == {"sd-webui-tiny": "new commits"} and to_update["choices"] == ["sd-webui-tiny"]
    assert "new commits" in table and "Updates available: sd-webui-tiny." in message

    message = tab.apply(services, None, ["sd-webui-tiny"], "none", ["sd-webui-tiny"])
    assert f"sd-webui-tiny: updated to {newer.hexsha[:8]}" in message and "Restart the web UI" in message
    [found] = extensions.discover(services.paths, services.options, services.args)
    assert found.commit_hash == newer.hexsha


def test_update_of_a_folder_without_git_says_so(tmp_path):
    services = make_services(tmp_path)
    (services.paths.extensions / "by-hand").mkdir()
    [found] = extensions.discover(services.paths, services.options, services.args)
    with pytest.raises(extensions.ExtensionError, match="by-hand: not a git checkout"):
        extensions.check_for_updates(found)


# ---------------------------------------------------------------- enabling and disabling

def test_disabling_persists_in_config_json_and_discover_reports_it(tmp_path, monkeypatch):
    monkeypatch.setattr(tab, "RESTART_DELAY", 0.01)
    services = make_services(tmp_path)
    for name in ("alpha", "beta"):
        (services.paths.extensions / name).mkdir()
    control = RecordingControl()
    message = tab.apply(services, control, ["beta"], "none", [])
    assert "Restarting" in message and "data-restarting" in message
    deadline = time.monotonic() + 5
    while not control.calls and time.monotonic() < deadline:
        time.sleep(0.01)
    assert control.calls == ["restart"]

    saved = json.loads(services.paths.config_file.read_text())
    assert saved["disabled_extensions"] == ["alpha"]
    reloaded = Options(services.paths.config_file)
    found = {item.name: item for item in extensions.discover(services.paths, reloaded, services.args)}
    assert (found["alpha"].enabled, found["alpha"].disabled_reason) == (False, "disabled in settings")
    assert found["beta"].enabled

    extensions.set_enabled(reloaded, {"alpha": True})
    assert Options(services.paths.config_file).get("disabled_extensions") == []


def test_without_server_control_apply_saves_and_asks_for_a_restart(tmp_path):
    services = make_services(tmp_path)
    (services.paths.extensions / "alpha").mkdir()
    message = tab.apply(services, None, [], "extra", [])
    assert "Restart the web UI for the changes to take effect" in message and "data-restarting" not in message
    assert Options(services.paths.config_file).get("disable_all_extensions") == "extra"


def test_disable_flags_and_setting_leave_builtins_or_nothing(tmp_path):
    services = make_services(tmp_path)
    (tmp_path / "builtin" / "builtin-ext").mkdir(parents=True)
    (services.paths.extensions / "user-ext").mkdir()

    def enabled(args, options) -> dict[str, bool]:
        return {item.name: item.enabled for item in extensions.discover(services.paths, options, args)}

    assert enabled(services.args, {}) == {"builtin-ext": True, "user-ext": True}
    assert enabled(parse_args(["--disable-extra-extensions"]), {}) == {"builtin-ext": True, "user-ext": False}
    assert enabled(services.args, {"disable_all_extensions": "extra"}) == {"builtin-ext": True, "user-ext": False}
    assert enabled(parse_args(["--disable-all-extensions"]), {}) == {"builtin-ext": False, "user-ext": False}
    assert enabled(services.args, {"disable_all_extensions": "all"}) == {"builtin-ext": False, "user-ext": False}
    # the checkboxes keep the user's own choices under the flags, so applying does not disable everything
    found = extensions.discover(services.paths, {}, parse_args(["--disable-all-extensions"]))
    choices, ticked = tab.enabled_choices(found, {"disabled_extensions": ["user-ext"]})
    assert choices == [("builtin-ext (built-in)", "builtin-ext"), ("user-ext", "user-ext")]
    assert ticked == ["builtin-ext"]


# ---------------------------------------------------------------- broken folders, metadata.ini

def test_broken_metadata_and_broken_git_are_listed_not_fatal(tmp_path):
    services = make_services(tmp_path)
    root = services.paths.extensions
    (root / "bad-metadata").mkdir()
    (root / "bad-metadata" / "metadata.ini").write_text("[Extension\nName = oops\n")
    (root / "bad-git" / ".git").mkdir(parents=True)
    (root / "bad-git" / ".git" / "HEAD").write_text("garbage")
    (root / "git-file").mkdir()
    (root / "git-file" / ".git").write_text("gitdir: /nowhere/at/all\n")
    (root / ".hidden").mkdir()
    (root / "a-file.txt").write_text("x")

    found = {item.name: item for item in extensions.discover(services.paths, services.options, services.args)}
    assert sorted(found) == ["bad-git", "bad-metadata", "git-file"]
    assert all(item.enabled for item in found.values())
    assert found["bad-metadata"].canonical_name == "bad-metadata"
    assert "metadata.ini ignored" in found["bad-metadata"].problems[0]
    assert found["bad-git"].problems and found["bad-git"].commit_hash == ""
    assert found["git-file"].problems
    table, _, _ = tab.listing(services)
    assert "metadata.ini ignored" in table


def test_metadata_names_requirements_and_load_order(tmp_path):
    services = make_services(tmp_path)
    root = services.paths.extensions
    for name in ("a-first", "b-second", "c-needs", "other"):
        (root / name).mkdir()
    (root / "a-first" / "metadata.ini").write_text("[Extension]\nName = Shared\n")
    (root / "b-second" / "metadata.ini").write_text("[Extension]\nName = shared\n")
    (root / "c-needs" / "metadata.ini").write_text(
        "[Extension]\nRequires = missing|Other, shared\n"
        "[scripts]\nAfter = base.py\n"
        "[scripts/x.py]\nRequires = other/scripts/y.py\nBefore = a.py b.py\nAfter = c.py\n"
        "[callbacks/c-needs/x.py/on_ui_tabs]\nBefore = other/y.py/on_ui_tabs\n")
    found = {item.name: item for item in extensions.discover(services.paths, services.options, services.args)}

    assert found["a-first"].enabled and found["a-first"].canonical_name == "shared"
    assert not found["b-second"].enabled
    assert found["b-second"].disabled_reason == f"duplicate of {root / 'a-first'}"
    metadata = found["c-needs"].metadata
    assert metadata.requires == ["other", "shared"]
    assert metadata.script_order("scripts/x.py") == (["other/scripts/y.py"], ["a.py", "b.py"], ["c.py", "base.py"])
    assert metadata.script_order("scripts/z.py") == ([], [], ["base.py"])
    assert metadata.callback_order("c-needs/x.py/on_ui_tabs") == (["other/y.py/on_ui_tabs"], [])
    assert metadata.callback_order("unknown") == ([], [])
    # a disabled duplicate does not take the name: with the first one disabled, the second loads
    found = {item.name: item for item in extensions.discover(
        services.paths, {"disabled_extensions": ["a-first"]}, services.args)}
    assert (found["a-first"].enabled, found["b-second"].enabled) == (False, True)


def test_run_installer_reports_failures_and_timeouts(tmp_path):
    services = make_services(tmp_path)
    failing = services.paths.extensions / "failing"
    failing.mkdir()
    (failing / "install.py").write_text("print('about to fail')\nraise SystemExit(3)\n")
    slow = services.paths.extensions / "slow"
    slow.mkdir()
    (slow / "install.py").write_text("import time\nprint('sleeping', flush=True)\ntime.sleep(60)\n")
    found = {item.name: item for item in extensions.discover(services.paths, services.options, services.args)}

    ok, output = extensions.run_installer(found["failing"], tmp_path)
    assert not ok and "about to fail" in output and "exit code 3" in output
    started = time.monotonic()
    ok, output = extensions.run_installer(found["slow"], tmp_path, timeout=1)
    assert not ok and "sleeping" in output and "did not finish within 1 s" in output
    assert time.monotonic() - started < 10
    assert extensions.run_installer(extensions.read_extension(tmp_path), tmp_path) == (True, "")


# ---------------------------------------------------------------- the tab

def test_the_table_escapes_names_and_marks_builtins(tmp_path):
    services = make_services(tmp_path)
    (tmp_path / "builtin" / "ours").mkdir(parents=True)
    hostile = "<img src=x onerror=alert(1)>"
    (services.paths.extensions / hostile).mkdir()
    services.scripts.errors.append(SimpleNamespace(extension=hostile, file="scripts/x.py", message="<b>boom</b>"))
    table, enabled, _ = tab.listing(services)
    assert hostile not in table and "&lt;img src=x onerror=alert(1)&gt;" in table
    assert "ours <span class=\"extension-builtin\">(built-in)</span>" in table
    assert "&lt;b&gt;boom&lt;/b&gt;" in table and "failed to load" in table
    assert enabled["choices"] == [("ours (built-in)", "ours"), (hostile, hostile)]


def test_the_tab_builds_with_a1111_element_ids(tmp_path):
    services = make_services(tmp_path)
    with gr.Blocks() as demo:
        tab.create_tab(services, demo=demo, server_control=RecordingControl())
    ids = {block.elem_id for block in demo.blocks.values()}
    assert {"extensions_installed_top", "extensions_apply", "extensions_check", "extension_to_install",
            "extension_to_install_branch", "extension_to_install_dirname", "extension_install",
            "extension_install_result"} <= ids
    buttons = {block.elem_id: block for block in demo.blocks.values() if isinstance(block, gr.Button)}
    assert buttons["extensions_apply"].value == "Apply and restart UI" and buttons["extensions_apply"].interactive

    listening = make_services(tmp_path, "--listen")
    with gr.Blocks() as demo:
        tab.create_tab(listening, demo=demo)
    buttons = {block.elem_id: block for block in demo.blocks.values() if isinstance(block, gr.Button)}
    assert not buttons["extension_install"].interactive and not buttons["extensions_apply"].interactive


def test_installer_uses_this_interpreter(tmp_path):
    folder = tmp_path / "which-python"
    folder.mkdir()
    (folder / "install.py").write_text("import sys\nprint(sys.executable)\n")
    ok, output = extensions.run_installer(extensions.read_extension(folder), tmp_path)
    assert ok and output == sys.executable
