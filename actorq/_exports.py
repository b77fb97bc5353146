"""A package's public names loaded on first use (PEP 562), for its ``__init__``."""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Mapping


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module ``__getattr__`` and ``__dir__`` of ``package``: each name of ``exports``
    (name -> the module that defines it) is imported at its first use and then kept in the
    package's namespace, so the next use is a plain attribute.

    Args:
        package: the package's ``__name__`` (it is in ``sys.modules`` while its ``__init__`` runs).
        exports: every name the package exports, with its module.
    """
    namespace = sys.modules[package].__dict__

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
