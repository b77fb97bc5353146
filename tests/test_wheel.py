"""The wheel installs a working actorq: built from the checkout, installed in a fresh virtualenv.

The checkout's files (tracked, and new ones not ignored) are copied to a
temporary directory and built there with ``pip wheel --no-deps``, so nothing
left in the checkout's ``build/`` can slip into the wheel. The wheel goes into
a virtualenv made without pip (the running interpreter's pip installs into it
with ``--python``: a second ~5 s pip bootstrap saved), its dependencies from
the package index through pip's cache, as the README's install gets them. The
checks then run in that virtualenv with ``python -I`` from a directory outside
the checkout, so only the installed copy can be imported:

* without the ``postgres`` extra, ``actorq`` imports and ``actorq --help`` runs
  (psycopg loads on first use of a PostgreSQL name only);
* with it, every module of tests/test_api.py's PINNED_ALL imports, from the
  virtualenv, with every name of its ``__all__``;
* the installed .py files are exactly the package's sources (tests/test_layers.py
  finds them through pyproject's package-dir map);
* ``py.typed``, every ``journal/sql/*.sql`` and the dashboard's assets are installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_api import PINNED_ALL
from test_layers import installed_sources
from test_readme import copy_repo

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(300)

# Runs inside the fresh virtualenv; prints what it found as JSON.
CHECK = """
import importlib, json, sys
from pathlib import Path

pinned = json.loads(sys.argv[1])
found = {"missing": [], "outside": [], "files": [], "data": []}
for module_name, names in pinned.items():
    module = importlib.import_module(module_name)
    if not Path(module.__file__).resolve().is_relative_to(Path(sys.prefix).resolve()):
        found["outside"].append(f"{module_name}: {module.__file__}")
    for name in sorted(set(names) | set(module.__all__)):
        if not hasattr(module, name):
            found["missing"].append(f"{module_name}.{name}")
package = Path(importlib.import_module("actorq").__file__).parent
found["files"] = sorted(p.relative_to(package.parent).as_posix() for p in package.rglob("*.py"))
data = [package / "py.typed", *package.glob("journal/sql/*.sql"), *package.glob("node/dashboard/static/*")]
found["data"] = sorted(p.relative_to(package).as_posix() for p in data if p.is_file())
print(json.dumps(found))
"""


def _run(argv: list[str], cwd: Path, env: dict[str, str], timeout: float = 180) -> str:
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(argv[:4])} ... failed ({result.returncode}):\n{result.stderr[-4000:]}"
    return result.stdout


def test_the_wheel_installs_and_imports_outside_the_checkout(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    timings: dict[str, float] = {}
    started = last = time.monotonic()

    def lap(step: str) -> None:
        nonlocal last
        now = time.monotonic()
        timings[step] = now - last
        last = now

    source = copy_repo(tmp_path / "source")
    lap("copy")
    _run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-q", "-w", str(tmp_path / "dist")],
         elsewhere, env)
    (wheel,) = (tmp_path / "dist").glob("actorq-*.whl")
    lap("build")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], elsewhere, env)
    python = venv / "bin" / "python"
    pip_install = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q"]
    _run([*pip_install, str(wheel)], elsewhere, env)
    lap("install")
    usage = _run([str(venv / "bin" / "actorq"), "--help"], elsewhere, env, timeout=60)
    bare = _run([str(python), "-I", "-c", "import sys, actorq, actorq.journal, actorq.node.node; "
                 "print('psycopg' in sys.modules or 'starlette' in sys.modules or 'uvicorn' in sys.modules)"],
                elsewhere, env)
    lap("check without extras")
    _run([*pip_install, f"{wheel}[postgres]"], elsewhere, env)
    lap("install postgres extra")
    found = json.loads(_run([str(python), "-I", "-c", CHECK, json.dumps(PINNED_ALL)], elsewhere, env))
    lap("check")
    print(f"\nwheel test: {time.monotonic() - started:.1f} s (" +
          ", ".join(f"{step} {seconds:.1f} s" for step, seconds in timings.items()) + ")")

    assert usage.startswith("usage: actorq"), usage
    assert bare.strip() == "False", "importing actorq loaded psycopg, starlette or uvicorn"
    assert found["outside"] == [], "imported from outside the virtualenv"
    assert found["missing"] == [], "public names missing from the installed package"
    sources = sorted(source.module.replace(".", "/") + ("/__init__.py" if source.is_package else ".py")
                     for source in installed_sources())
    assert found["files"] == sources, "the installed .py files are not the package's sources"
    sql = sorted(f"journal/sql/{p.name}" for p in (ROOT / "actorq" / "journal" / "sql").glob("*.sql"))
    assets = sorted(f"node/dashboard/static/{p.name}" for p in (ROOT / "actorq" / "node" / "dashboard" / "static").glob("*"))
    assert sql and assets and found["data"] == sorted(["py.typed", *sql, *assets])
