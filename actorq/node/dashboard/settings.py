"""The ``[dashboard]`` section of ``topology.toml`` (docs/dashboard.md).

Read without the web stack: only serving the dashboard imports Starlette and uvicorn.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from actorq.node.metrics import check_bind, is_loopback, parse_bind

__all__ = ["DashboardConfig", "MIN_TOKEN", "bind_problem", "token_problem"]

MIN_TOKEN = 16  # characters a token has at least
MAX_TOKEN = 1024
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


def _check_token(value: str) -> str | None:  # never echoes the value
    if value and not MIN_TOKEN <= len(value) <= MAX_TOKEN:
        return f"expected {MIN_TOKEN} to {MAX_TOKEN} characters, got {len(value)}"
    if any(ord(ch) < 0x21 or ord(ch) > 0x7E for ch in value):
        return "expected printable ASCII without spaces"
    return None


def _check_env_name(value: str) -> str | None:
    if value and not _ENV_NAME.fullmatch(value):
        return f"expected an environment variable name (letters, digits, _), got {value[:60]!r}"
    return None


@dataclass(frozen=True, slots=True)
class DashboardConfig:
    """The ``[dashboard]`` section (docs/dashboard.md).

    - ``bind``: ``"HOST:PORT"`` the node serves its web dashboard on; ``""`` (default): none.
      Port 0 takes any free port (`DashboardServer.address` says which).
    - ``token``: a secret of 16 to 1024 printable characters every request must carry
      (``Authorization: Bearer TOKEN``, or once as ``/?token=TOKEN``, which sets a cookie);
      ``""`` (default): none, and then only a loopback ``bind`` is accepted.
    - ``token_env``: the name of an environment variable holding the token instead (read
      when the node starts); at most one of ``token`` and ``token_env``.
    """

    bind: str = field(default="", metadata={"check": check_bind})
    token: str = field(default="", metadata={"check": _check_token}, repr=False)
    token_env: str = field(default="", metadata={"check": _check_env_name})

    def resolved_token(self) -> str | None:
        """The token requests must carry: ``token``, or the value of ``token_env``; None: none."""
        if self.token:
            return self.token
        if self.token_env:
            return os.environ.get(self.token_env) or None
        return None


def token_problem(config: DashboardConfig) -> tuple[str, str] | None:
    """``(key, why)`` the token settings are refused, or None: both set, or ``token_env`` naming an
    unset variable, or a variable whose value is no valid token."""
    if config.token and config.token_env:
        return "dashboard.token_env", "set dashboard.token or dashboard.token_env, not both"
    if config.token_env and config.bind:
        value = os.environ.get(config.token_env)
        if not value:
            return "dashboard.token_env", f"the environment variable {config.token_env} is not set or empty"
        if problem := _check_token(value):
            return "dashboard.token_env", f"the environment variable {config.token_env}: {problem}"
    return None


def bind_problem(bind: str, token: str | None) -> str | None:
    """Why serving the dashboard at `bind` is refused (a host beyond loopback without a token), or None."""
    if not bind or token:
        return None
    host, _ = parse_bind(bind)
    if is_loopback(host):
        return None
    return (f"{host} is not a loopback address and no token is set: set dashboard.token or dashboard.token_env "
            "to serve the dashboard beyond this machine")
