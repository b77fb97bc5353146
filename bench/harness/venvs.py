"""One virtualenv per peer under the harness's cache folder, keyed by the peer's requirements.

A peer's adapter (``bench/peers/NAME.py``) declares its pinned pip
requirements in a module-level literal ``REQUIREMENTS = ["huey==3.5.4", ...]``.
The harness reads that list with `ast` (the adapter is never imported here:
its dependencies belong to its own virtualenv), hashes it, and builds
``CACHE/venvs/NAME-HASH`` with ``python -m venv`` and pip. A venv is ready
once its ``.installed`` marker exists: a changed pin gives a new hash and so
a new venv; an install that failed leaves no marker and is retried next run.

An adapter with no requirements (an empty list or none at all: only the
standard library) runs with the harness's own interpreter.
"""

from __future__ import annotations

import ast
import hashlib
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

MARKER = ".installed"


class RequirementsError(ValueError):
    """``REQUIREMENTS`` in an adapter is not a literal list of strings."""


def _literal(path: Path, name: str) -> object:
    """The literal value assigned to ``name`` at the top of the module at ``path`` (None: not there)."""
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except SyntaxError as exc:
        raise RequirementsError(f"{path.name}: does not parse: {exc.msg} (line {exc.lineno})") from None
    for node in tree.body:
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            try:
                return ast.literal_eval(value)
            except ValueError:
                raise RequirementsError(f"{path.name}: {name} must be a literal") from None
    return None


def read_requirements(path: Path) -> list[str]:
    """The adapter's ``REQUIREMENTS`` list, read without importing the file.

    Args:
        path: the adapter script.

    Returns:
        The requirement strings, in order; ``[]`` when the module has none.

    Raises:
        RequirementsError: the file does not parse, or ``REQUIREMENTS`` is
            not a literal list (or tuple) of strings.
    """
    items = _literal(path, "REQUIREMENTS")
    if items is None:
        return []
    if not isinstance(items, (list, tuple)) or not all(isinstance(s, str) and s.strip() for s in items):
        raise RequirementsError(f"{path.name}: REQUIREMENTS must be a literal list of strings")
    return [s.strip() for s in items]


def read_python(path: Path) -> str | None:
    """The adapter's ``PYTHON`` (the ``MAJOR.MINOR`` its virtualenv needs, e.g. ``"3.12"``), or None: any.

    Raises:
        RequirementsError: ``PYTHON`` is not a literal ``"3.N"`` string.
    """
    version = _literal(path, "PYTHON")
    if version is None:
        return None
    if not (isinstance(version, str) and re.fullmatch(r"3\.\d{1,2}", version)):
        raise RequirementsError(f'{path.name}: PYTHON must be a literal "3.N" string, got {version!r}')
    return version


def find_python(version: str | None) -> str | None:
    """An interpreter of ``version`` on this machine: this one when it matches (or no version is
    asked), else a pyenv install of it, else ``pythonX.Y`` on PATH; each candidate is run once to
    check it is that version (pyenv's shims exist for versions that are not selected, and fail)."""
    if version is None or version == f"{sys.version_info.major}.{sys.version_info.minor}":
        return sys.executable
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates = [str(p) for p in sorted(root.glob(f"{version}.*/bin/python{version}"), reverse=True)]
    found = shutil.which(f"python{version}")
    if found:
        candidates.append(found)
    for candidate in candidates:
        try:
            done = subprocess.run([candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                  capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0 and done.stdout.strip() == version:
            return candidate
    return None


def requirements_key(requirements: list[str], python: str | None = None) -> str:
    """A short hash naming the venv of these requirements (order and duplicates do not matter)
    on ``python`` (MAJOR.MINOR; None: the harness's own)."""
    text = "\n".join(sorted(set(requirements)))
    text += f"\npython {python or f'{sys.version_info.major}.{sys.version_info.minor}'}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass
class Venv:
    """Where a peer runs: ``python`` is None when it could not be installed (``problem`` says why)."""

    name: str
    requirements: list[str]
    path: Path | None
    python: str | None
    problem: str = ""


def venv_path(cache: Path, name: str, requirements: list[str], python: str | None = None) -> Path:
    """``CACHE/venvs/NAME-HASH``."""
    return cache / "venvs" / f"{name}-{requirements_key(requirements, python)}"


def ensure(cache: Path, name: str, requirements: list[str], install: bool,
           progress: Callable[[str], None], python_version: str | None = None) -> Venv:
    """The peer's venv, built if missing (and ``install``); never raises for an install failure.

    Args:
        cache: the harness's cache folder.
        name: the peer (the adapter's file stem).
        requirements: its pinned requirements (`read_requirements`).
        install: build a missing venv; False reports it as not installed.
        progress: called with one line before a build starts.
        python_version: the ``MAJOR.MINOR`` the peer needs (`read_python`), None for any.
    """
    base = find_python(python_version)
    if base is None:
        return Venv(name, requirements, None, None, f"needs Python {python_version}, which this machine does not have "
                                                   f"(no python{python_version} on PATH or under pyenv)")
    if not requirements:
        return Venv(name, [], None, base)
    path = venv_path(cache, name, requirements, python_version)
    python = path / "bin" / "python"
    if (path / MARKER).exists() and python.exists():
        return Venv(name, requirements, path, str(python))
    if not install:
        return Venv(name, requirements, path, None, f"no virtualenv at {path} (--no-install)")
    progress(f"installing {name} ({', '.join(requirements)}) into {path} ...")
    path.parent.mkdir(parents=True, exist_ok=True)
    log = path.parent / f"{path.name}.log"
    with open(log, "w") as out:
        steps = [[base, "-m", "venv", "--clear", str(path)],
                 [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
                  *requirements]]
        for cmd in steps:
            out.write("$ " + " ".join(cmd) + "\n")
            out.flush()
            try:
                done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      timeout=900)
            except subprocess.TimeoutExpired:
                return Venv(name, requirements, path, None, f"{cmd[2]} took over 15 minutes (log: {log})")
            if done.returncode != 0:
                return Venv(name, requirements, path, None, f"{_reason(log)} (log: {log})")
    (path / MARKER).write_text("\n".join(requirements) + "\n")
    return Venv(name, requirements, path, str(python))


def _reason(log: Path) -> str:
    """The most telling line of a failed install's output: pip's first ERROR line, else the last line."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")]
    text = errors[0] if errors else (lines[-1] if lines else "install failed")
    return text[:200]


def python_tag() -> str:
    """The interpreter the venvs are made from, e.g. ``/usr/bin/python3 (3.11.7)``."""
    return f"{os.path.realpath(sys.executable)} ({'.'.join(map(str, sys.version_info[:3]))})"


__all__ = ["RequirementsError", "Venv", "ensure", "find_python", "read_python", "read_requirements",
           "requirements_key", "venv_path"]
