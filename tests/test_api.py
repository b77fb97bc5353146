"""The public API: pinned `__all__` lists, docstrings, and H7 (no pickle anywhere).

Changing a public name is a decision, so it must change this file too.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator

import pytest

import actorq
import actorq.journal
import actorq.supervisors
import actorq.testing
import actorq.transports

PINNED_ALL = {
    "actorq": [
        "Actor", "ActorQError", "ActorRef", "ActorStopped", "ActorSystem", "AskTimeout", "AsyncClient", "CircuitBreaker",
        "Client",
        "Config", "ConfigError", "Discard", "Job", "JobContext", "JobFailed", "JobState", "JournalError",
        "JournalLocked", "MailboxFull", "Node", "NodeEvent", "NodeFailed", "NotCommitted", "PermanentError", "QueueFull",
        "QueueRef",
        "ResultExpired", "Retry", "RetryPolicy", "Schedule", "Task", "TaskRegistry", "TransientError", "UnknownTask",
        "current_job",
    ],
    "actorq.journal": [
        "BreakerState", "CircuitBreaker", "Failure", "JobInfo", "JobResult", "JobState", "Journal", "KeptResult", "LeasedJob", "Listener",
        "MemoryJournal", "NewJob",
        "PostgresJournal", "QueueLimits", "QueueStats",
        "SQLiteJournal", "TERMINAL_STATES", "enqueue_in", "migrate", "open_journal",
    ],
    "actorq.supervisors": [
        "ActorChild", "AlreadyPresent", "AlreadyStarted", "Backoff", "Child", "ChildExitHook",
        "ChildInfo", "ChildSpec", "Counts", "Exit", "IGNORE", "Ignore", "InvalidChildSpec", "InvalidSupFlags",
        "KILLED", "NORMAL", "NotFound", "NotSupported", "ProcessChild", "RemoteError", "RemoteRef",
        "RestartIntensity", "Restarting", "Running", "SHUTDOWN", "StartFailed", "StartFn", "SupFlags",
        "SupervisorError", "SupervisorRef", "actor_process", "actor_start", "current_system", "process_start",
        "start_supervisor", "supervisor_spec",
    ],
    "actorq.testing": ['DrainResult', 'EnqueuedJob', 'Ledger', 'LedgerEntry', 'ManualClock', 'QueueCheck',
                       'TaskRecorder', 'check_total_queue', 'eventually', 'job_history', 'job_states',
                       'journal_invariants', 'kill_leftover_children', 'live_children'],
    "actorq.transports": ["FrameError", "LoopSocket", "decode", "encode", "private_ipc_dir"],
}


@pytest.mark.parametrize("module_name", sorted(PINNED_ALL))
def test_all_is_pinned_and_sorted(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert module.__all__ == PINNED_ALL[module_name]
    assert module.__all__ == sorted(module.__all__)
    for name in module.__all__:
        assert hasattr(module, name), f"{module_name}.{name} is in __all__ but missing"


def _public_objects() -> Iterator[tuple[str, Any]]:
    for module_name, names in PINNED_ALL.items():
        module = importlib.import_module(module_name)
        for name in names:
            yield f"{module_name}.{name}", getattr(module, name)


def _documentable(obj: Any) -> bool:
    # Constants such as TERMINAL_STATES cannot carry a docstring of their own.
    return inspect.isclass(obj) or inspect.isroutine(obj) or isinstance(obj, ModuleType)


def _own_public_members(cls: type) -> Iterator[tuple[str, Any]]:
    """Public methods and properties defined by `cls` itself (inherited ones are checked on their class)."""
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(value, (staticmethod, classmethod)):
            yield name, value.__func__
        elif inspect.isfunction(value) or isinstance(value, property):
            yield name, value


def test_every_public_name_has_a_docstring() -> None:
    missing = []
    for qualname, obj in _public_objects():
        if not _documentable(obj):
            continue
        if not (obj.__doc__ or "").strip():
            missing.append(qualname)
        if inspect.isclass(obj) and obj.__module__.startswith("actorq"):
            for member_name, member in _own_public_members(obj):
                if not (inspect.getdoc(member) or "").strip():
                    missing.append(f"{qualname}.{member_name}")
    assert missing == [], f"public names without a docstring: {missing}"


def test_public_package_modules_have_docstrings_or_layout_comment() -> None:
    # `__init__` modules open with a comment on the layout; implementation modules carry docstrings.
    for module_name in ("actorq.errors", "actorq.journal.protocol", "actorq.journal.sqlite",
                        "actorq.transports.codec", "actorq._kernel.actor", "actorq._kernel.ref",
                        "actorq._kernel.system", "actorq._kernel.mailbox"):
        assert (importlib.import_module(module_name).__doc__ or "").strip(), module_name


# -- H7: no pickle anywhere --------------------------------------------------------------

FORBIDDEN_MODULES = {"pickle", "_pickle", "cPickle", "marshal", "shelve", "dill", "cloudpickle", "copyreg"}
UNPACK_CALLS = {"unpackb", "unpack", "loads", "Unpacker"}
FORBIDDEN_HOOKS = {"object_hook", "object_pairs_hook", "list_hook"}


def _package_sources() -> list[Path]:
    roots = [Path(p) for pkg in (actorq, actorq.supervisors, actorq.transports) for p in pkg.__path__]
    files = sorted({f.resolve() for root in roots for f in root.rglob("*.py")})
    assert len(files) > 10, files
    return files


def dotted_name(node: ast.AST) -> str:
    """``a.b.c`` for a name or attribute chain; ``""`` for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{dotted_name(node.value)}.{node.attr}"
    return ""


def _pickle_imports(source: str, where: str) -> list[str]:
    offenders = []
    for node in ast.walk(ast.parse(source, filename=where)):
        modules: list[str] = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules = [node.module]
        elif isinstance(node, ast.Call) and dotted_name(node.func) in {"__import__", "importlib.import_module",
                                                                  "import_module"}:
            modules = [a.value for a in node.args[:1] if isinstance(a, ast.Constant) and isinstance(a.value, str)]
        for module in modules:
            if module.split(".")[0] in FORBIDDEN_MODULES:
                offenders.append(f"{where}:{node.lineno}: imports {module}")
    return offenders


def _decoder_offenders(source: str, where: str) -> tuple[int, list[str]]:
    """Count msgpack decode sites in `source`; list those that could build objects."""
    tree = ast.parse(source, filename=where)
    functions = {n.name: n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    offenders = []
    sites = 0
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = dotted_name(node.func)
        last = name.split(".")[-1]
        # unpackb/Unpacker are msgpack's whatever the import; unpack/loads only when spelt msgpack.*
        if not (last in {"unpackb", "Unpacker"} or (last in UNPACK_CALLS and "msgpack" in name)):
            continue
        sites += 1
        for kw in node.keywords:
            if kw.arg is None:
                offenders.append(f"{where}:{node.lineno}: **kwargs hide the decoder options")
            elif kw.arg in FORBIDDEN_HOOKS:
                offenders.append(f"{where}:{node.lineno}: {name}({kw.arg}=...)")
            elif kw.arg == "ext_hook":
                hook = functions.get(dotted_name(kw.value))
                body = [st for st in hook.body if not (isinstance(st, ast.Expr) and isinstance(st.value, ast.Constant))]\
                    if hook else []
                if not (len(body) == 1 and isinstance(body[0], ast.Raise)):
                    offenders.append(f"{where}:{node.lineno}: ext_hook {dotted_name(kw.value)} may build objects")
    return sites, offenders


def test_h7_no_pickle_family_import_anywhere() -> None:
    offenders = [o for path in _package_sources() for o in _pickle_imports(path.read_text(), str(path))]
    assert offenders == []


def test_h7_msgpack_decoders_build_no_objects() -> None:
    """No msgpack unpack passes object_hook/object_pairs_hook, and any ext_hook only raises."""
    sites = 0
    offenders: list[str] = []
    for path in _package_sources():
        n, bad = _decoder_offenders(path.read_text(), str(path))
        sites += n
        offenders += bad
    assert sites >= 1, "found no msgpack decoder to check"
    assert offenders == []


BAD_IMPORTS = '''
import pickle
from marshal import loads
import shelve as s
import dill.detect
__import__("cloudpickle")
importlib.import_module("pickle")
'''

BAD_DECODERS = '''
def build(code, data):
    return Thing(code, data)
msgpack.unpackb(b, object_hook=make)
unpackb(b, object_pairs_hook=dict)
msgpack.Unpacker(ext_hook=build)
msgpack.loads(b, **options)
'''

GOOD_DECODER = '''
def refuse(code, data):
    """No objects from the wire."""
    raise ValueError(code)
msgpack.unpackb(b, ext_hook=refuse, strict_map_key=True)
json.loads(text)
'''


def test_h7_the_scanners_catch_what_they_look_for() -> None:
    """The static checks above fail on bad code, so their passing means something."""
    assert len(_pickle_imports(BAD_IMPORTS, "bad.py")) == 6
    assert _pickle_imports("import json\nfrom . import pickle_free\n", "ok.py") == []
    sites, offenders = _decoder_offenders(BAD_DECODERS, "bad.py")
    assert (sites, len(offenders)) == (4, 4), offenders
    assert _decoder_offenders(GOOD_DECODER, "ok.py") == (1, [])
