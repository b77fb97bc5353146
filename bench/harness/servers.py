"""The servers a run needs, started on loopback for the run and stopped after (also on Ctrl-C).

- **Redis**: when ``redis-server`` is installed, two private servers on free
  loopback ports, one with AOF ``appendfsync everysec`` and one with no
  persistence, each with its files in a temporary directory. Each phase
  starts on an empty server (``FLUSHALL``).
- **PostgreSQL**: when its server binaries are installed (``pg_config
  --bindir``, else the newest ``/usr/lib/postgresql/*/bin``), a throwaway
  cluster (``initdb``) in a temporary directory on a free loopback port,
  ``fsync=on`` and ``synchronous_commit=on`` (the defaults, set explicitly),
  and a fresh database per phase (``CREATE DATABASE``, dropped after). The
  server refuses to run as root, so under root it runs as the ``postgres``
  user (else ``nobody``) through ``runuser``, as the tests' throwaway server
  does.

Each server runs in a session of its own, so a Ctrl-C at the terminal reaches
the harness and the adapters (which stop their workers) and not the servers,
which the harness stops last.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

#: the two Redis modes: name -> (server arguments, durability class of the server's side, text)
REDIS_MODES: dict[str, tuple[list[str], str, str]] = {
    "aof-everysec": (["--appendonly", "yes", "--appendfsync", "everysec"], "process",
                     "Redis AOF appendfsync everysec: up to 1 s of acknowledged writes lost on a machine crash"),
    "no-persistence": (["--appendonly", "no"], "none",
                       "Redis without persistence: everything lost when the server stops"),
}


class ServerError(RuntimeError):
    """A server could not be started or used; the message is one line."""


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (the kernel picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- Redis ----------------------------------------------------------------------------
def resp(host: str, port: int, *args: str, db: int = 0, timeout: float = 10.0) -> str:
    """Send one command to a Redis server (RESP over a plain socket); return the reply as text.

    Only what the harness needs: simple strings, integers, errors and flat
    arrays of bulk strings (joined with spaces).
    """
    def encode(parts: tuple[str, ...]) -> bytes:
        out = f"*{len(parts)}\r\n"
        for part in parts:
            out += f"${len(part.encode())}\r\n{part}\r\n"
        return out.encode()

    with socket.create_connection((host, port), timeout=timeout) as sock:
        data = (encode(("SELECT", str(db))) if db else b"") + encode(args)
        sock.sendall(data)
        reader = sock.makefile("rb")
        if db:
            _read_reply(reader)
        return _read_reply(reader)


def _read_reply(reader) -> str:  # type: ignore[no-untyped-def]
    line = reader.readline().decode().rstrip("\r\n")
    kind, rest = line[:1], line[1:]
    if kind == "-":
        raise ServerError(f"redis: {rest}")
    if kind in "+:":
        return rest
    if kind == "$":
        n = int(rest)
        return "" if n < 0 else reader.read(n + 2)[:-2].decode()
    if kind == "*":
        return " ".join(_read_reply(reader) for _ in range(max(0, int(rest))))
    raise ServerError(f"redis: unexpected reply {line!r}")


@dataclass
class Redis:
    """One Redis server, ours (``proc`` set) or given with ``--redis-url``."""

    mode: str  # a REDIS_MODES key, or what a given server's config says
    url: str
    cls: str  # the server side's durability class
    text: str
    proc: subprocess.Popen[bytes] | None = None
    home: Path | None = None

    @property
    def address(self) -> tuple[str, int, int]:
        """(host, port, db) of the URL."""
        parts = urlsplit(self.url)
        db = int(parts.path.strip("/") or 0)
        return parts.hostname or "127.0.0.1", parts.port or 6379, db

    def flush(self) -> None:
        """Empty the database before a phase (ours: the whole server)."""
        host, port, db = self.address
        resp(host, port, "FLUSHALL" if self.proc else "FLUSHDB", db=db)

    def stop(self) -> None:
        """Stop our server and remove its files."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.home is not None:
            shutil.rmtree(self.home, ignore_errors=True)


def redis_version() -> str | None:
    """``redis-server --version``'s number, or None when it is not installed."""
    exe = shutil.which("redis-server")
    if exe is None:
        return None
    out = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
    for word in out.split():
        if word.startswith("v="):
            return word[2:]
    return out.strip() or "?"


def start_redis(mode: str) -> Redis:
    """Start a private redis-server in ``mode`` on a free loopback port; wait until it answers."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise ServerError("redis-server is not installed")
    args, cls, text = REDIS_MODES[mode]
    home = Path(tempfile.mkdtemp(prefix=f"actorq-bench-redis-{mode}-"))
    port = free_port()
    with open(home / "log", "wb") as log:
        proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(home),
                                 "--daemonize", "no", "--loglevel", "warning", *args],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    server = Redis(mode, f"redis://127.0.0.1:{port}/0", cls, text, proc, home)
    deadline = time.monotonic() + 10
    try:
        while True:
            try:
                if resp("127.0.0.1", port, "PING", timeout=1) == "PONG":
                    return server
            except (OSError, ServerError):
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (home / "log").read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
                raise ServerError(f"redis-server ({mode}) did not start: {tail[0]}")
            time.sleep(0.05)
    except BaseException:  # also Ctrl-C while waiting: the caller never got it to stop
        server.stop()
        raise


def given_redis(url: str) -> Redis:
    """A server the user gave (``--redis-url``): its mode read from its config."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    try:
        aof = resp(host, port, "CONFIG", "GET", "appendonly").split()[-1]
        fsync = resp(host, port, "CONFIG", "GET", "appendfsync").split()[-1]
    except (OSError, ServerError, IndexError) as exc:
        raise ServerError(f"--redis-url: cannot reach {url}: {exc}") from None
    if aof != "yes":
        return Redis("given, no AOF", url, "none", f"Redis at {url}, AOF off")
    cls = "fsync" if fsync == "always" else "process"
    return Redis(f"given, AOF {fsync}", url, cls, f"Redis at {url}, AOF appendfsync {fsync}")


# -- PostgreSQL -----------------------------------------------------------------------
def pg_bindir() -> Path | None:
    """Where the PostgreSQL server binaries are, or None."""
    exe = shutil.which("pg_config")
    if exe:
        out = subprocess.run([exe, "--bindir"], capture_output=True, text=True).stdout.strip()
        if out and (Path(out) / "initdb").exists():
            return Path(out)
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3])
                   if Path(p).parts[-3].isdigit() else 0)
    return Path(found[-1]).parent if found else None


def pg_version(bindir: Path | None = None) -> str | None:
    """The server binaries' version (``postgres --version``), or None."""
    bindir = bindir or pg_bindir()
    if bindir is None:
        return None
    out = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True, text=True).stdout
    words = out.split()
    return words[2] if len(words) > 2 and words[1] == "(PostgreSQL)" else (out.strip() or "?")


@dataclass
class Postgres:
    """A PostgreSQL server (ours, or given with ``--pg-url``) that hands out fresh databases."""

    url: str  # the maintenance database's URL
    bindir: Path | None
    home: Path | None = None
    run_as: str | None = None
    version: str = "?"
    _count: int = field(default=0, repr=False)

    def _sql(self, statement: str) -> None:
        psql = str(self.bindir / "psql") if self.bindir and (self.bindir / "psql").exists() else shutil.which("psql")
        if psql is None:
            raise ServerError("psql is not installed")
        done = subprocess.run([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", self.url, "-c", statement],
                              capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise ServerError(f"psql: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else 'failed'}")

    def fresh_database(self) -> tuple[str, str]:
        """Create an empty database; return (name, its URL)."""
        self._count += 1
        name = f"bench_{os.getpid()}_{self._count}"
        self._sql(f"CREATE DATABASE {name}")
        parts = urlsplit(self.url)
        return name, parts._replace(path=f"/{name}").geturl()

    def drop_database(self, name: str) -> None:
        """Drop a database made by `fresh_database` (its sessions ended first)."""
        self._sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        """Stop our cluster and remove it."""
        if self.home is None or self.bindir is None:
            return
        data = self.home / "data"
        if (data / "postmaster.pid").exists():
            subprocess.run(self._as_owner([str(self.bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w",
                                           "stop"]), capture_output=True, timeout=60)
        shutil.rmtree(self.home, ignore_errors=True)
        self.home = None

    def _as_owner(self, cmd: list[str]) -> list[str]:
        return ["runuser", "-u", self.run_as, "--", *cmd] if self.run_as else cmd


def start_postgres() -> Postgres:
    """initdb a throwaway cluster and start it on a free loopback port (fsync on)."""
    bindir = pg_bindir()
    if bindir is None:
        raise ServerError("PostgreSQL server binaries are not installed")
    run_as = None
    if os.geteuid() == 0:
        for name in ("postgres", "nobody"):
            try:
                pwd.getpwnam(name)
                run_as = name
                break
            except KeyError:
                continue
        if run_as is None:
            raise ServerError("running as root and no postgres or nobody user to run PostgreSQL as")
    home = Path(tempfile.mkdtemp(prefix="actorq-bench-pg-"))
    port = free_port()
    server = Postgres(f"postgresql://postgres@127.0.0.1:{port}/postgres", bindir, home, run_as,
                      pg_version(bindir) or "?")
    try:
        if run_as:
            shutil.chown(home, run_as, run_as)
        steps = [
            [str(bindir / "initdb"), "-D", str(home / "data"), "-U", "postgres", "-A", "trust", "-E", "UTF8",
             "--no-sync"],
            [str(bindir / "pg_ctl"), "-D", str(home / "data"), "-l", str(home / "log"), "-w", "-t", "60",
             "-o", f"-p {port} -k {home} -c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=on",
             "start"],
        ]
        for cmd in steps:
            done = subprocess.run(server._as_owner(cmd), capture_output=True, text=True, timeout=120,
                                  stdin=subprocess.DEVNULL, start_new_session=True)
            if done.returncode != 0:
                text = (done.stderr or done.stdout).strip().splitlines()
                raise ServerError(f"{Path(cmd[0]).name} failed: {text[-1] if text else done.returncode}")
    except BaseException:
        server.stop()
        raise
    return server


def given_postgres(url: str) -> Postgres:
    """A server the user gave (``--pg-url``): databases are created and dropped on it."""
    server = Postgres(url, pg_bindir())
    try:
        server._sql("SELECT 1")
    except (ServerError, subprocess.TimeoutExpired) as exc:
        raise ServerError(f"--pg-url: cannot use {url}: {exc}") from None
    return server


__all__ = ["Postgres", "REDIS_MODES", "Redis", "ServerError", "given_postgres", "given_redis", "pg_bindir",
           "pg_version", "redis_version", "start_postgres", "start_redis"]
