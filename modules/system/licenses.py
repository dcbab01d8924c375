"""The licenses of the project and of the packages it runs on (requirements.txt), read offline from the
installed packages' metadata (License-Expression, License, classifiers) and their license files."""
from __future__ import annotations

import importlib.metadata
import re
from dataclasses import dataclass, field
from pathlib import Path

MAX_TEXT = 64 * 1024        # characters of one license text shown (torch's runs to hundreds of KB)
LICENSE_FILE = re.compile(r"(^|/)(LICEN[CS]E|COPYING|NOTICE)[^/]*$", re.IGNORECASE)
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


@dataclass
class PackageLicense:
    name: str
    version: str | None                 # None: not installed
    license: str                        # the SPDX expression or the metadata's words; "" when it says none
    texts: list[tuple[str, str]] = field(default_factory=list)   # (file name, text) of its own license files


def requirement_names(requirements: Path) -> list[str]:
    """The package names of a requirements file, in its order (comments, options and markers left out)."""
    names = []
    try:
        lines = requirements.read_text(encoding="utf-8").splitlines()
    except OSError:
        return names
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        match = _REQUIREMENT.match(line)
        if match and match.group(1) not in names:
            names.append(match.group(1))
    return names


def _declared(metadata) -> str:
    expression = metadata.get("License-Expression")
    if expression:
        return expression
    text = (metadata.get("License") or "").strip()
    if text and len(text) < 200 and "\n" not in text:
        return text
    classifiers = [item.rsplit(" :: ", 1)[-1] for item in metadata.get_all("Classifier") or []
                   if item.startswith("License ::")]
    return ", ".join(classifiers) or (text.splitlines()[0][:200] if text else "")


def _own_license_files(distribution) -> list:
    """The license files in the package's .dist-info (not those of every vendored library), shortest path first."""
    found = [path for path in distribution.files or [] if LICENSE_FILE.search(str(path))]
    in_info = [path for path in found if ".dist-info/" in str(path)]
    return sorted(in_info or found, key=lambda path: (str(path).count("/"), len(str(path)), str(path)))[:2]


def package_license(name: str) -> PackageLicense:
    try:
        distribution = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return PackageLicense(name, None, "")
    texts = []
    for path in _own_license_files(distribution):
        try:
            text = Path(path.locate()).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if len(text) > MAX_TEXT:
            text = text[:MAX_TEXT] + f"\n… (cut: the whole text is in {path.locate()})"
        texts.append((Path(str(path)).name, text))
    return PackageLicense(distribution.metadata.get("Name") or name, distribution.version,
                          _declared(distribution.metadata), texts)


def project_license(project_root: Path) -> tuple[str, str] | None:
    """(file name, text) of the project's own license file, if it has one."""
    for path in sorted(project_root.glob("*")):
        if path.is_file() and LICENSE_FILE.search(path.name):
            return path.name, path.read_text(encoding="utf-8", errors="replace")[:MAX_TEXT]
    return None


def dependency_licenses(project_root: Path) -> list[PackageLicense]:
    return [package_license(name) for name in requirement_names(project_root / "requirements.txt")]
