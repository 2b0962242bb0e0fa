"""The SQLite files a search keeps (its study, its MLflow store): made whole or not at all, and a
one-line answer, naming the file and what to do, when one cannot be used; locks that processes
sharing a store take on it; whether hpo may write into the libraries' own tables."""

from __future__ import annotations

import functools
import hashlib
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import filelock

from hpo._errors import HpoError


def sqlite_path(url: str) -> Path | None:
    """The file of an SQLite URL (``sqlite:///path``), or None for any other store."""
    if url.startswith("sqlite:///") and len(url) > len("sqlite:///"):
        return Path(url.removeprefix("sqlite:///"))
    return None


def writable(path: Path, argument: str) -> None:
    """Refuse, before anything is written, a store file or folder this process cannot write."""
    if path.exists():
        if not os.access(path, os.R_OK | os.W_OK):
            raise HpoError(f"{path} is read-only; make it writable, or name another", argument=argument)
        return
    folder = next((p for p in path.absolute().parents if p.exists()), None)
    if folder is None or not os.access(folder, os.W_OK | os.X_OK):
        raise HpoError(f"cannot create {path}: {folder} is read-only; name a store in a folder you can write",
                       argument=argument)


FAST_PATHS = "HPO_FAST_PATHS"
"""Set to 0, every write to a study or an MLflow store goes through the library's public API
(``hpo.store._optuna``, ``hpo.tracking._runs``): slower, and independent of their tables."""


def fast_paths() -> bool:
    """Whether hpo may write straight into Optuna's and MLflow's own tables (where it knows
    their schema): unless ``$HPO_FAST_PATHS`` is 0."""
    return os.environ.get(FAST_PATHS, "1") != "0"


def cache_dir() -> Path:
    """Where hpo keeps what any project on this machine can reuse: ``$HPO_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/hpo``, else ``~/.cache/hpo``."""
    if os.environ.get("HPO_CACHE_DIR"):
        return Path(os.environ["HPO_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hpo"


def create_whole(path: Path, create: Callable[[str], object], argument: str) -> None:
    """Create the SQLite store ``path`` if it does not exist, whole or not at all: under a lock
    file beside it, into a temporary file that ``create`` (given its URL) fills and that is then
    renamed into place. Two first runs at once make it once; an interrupted one leaves no store."""
    if path.exists():
        return
    writable(path, argument)
    path.parent.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(f"{path}.lock"):
        if path.exists():
            return
        for leftover in path.parent.glob(f"{path.name}.creating-*"):  # from a run that was interrupted
            leftover.unlink(missing_ok=True)
        temporary = path.with_name(f"{path.name}.creating-{os.getpid()}")
        try:
            create(f"sqlite:///{temporary}")
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)


def cached_store(name: str, create: Callable[[str], object]) -> Path | None:
    """The SQLite store ``name`` kept in ``cache_dir()``, made whole by ``create`` the first time
    (``name`` must change whenever what ``create`` makes may); None where the cache cannot be
    written. New stores can be copies of it."""
    cached = cache_dir() / f"{name}.db"
    try:
        create_whole(cached, create, "cache")
    except (OSError, HpoError):
        return None
    return cached


def error_line(error: BaseException) -> str:
    """``error`` in a line: its type and the first line of its message, at most 200 characters."""
    return f"{type(error).__name__}: {error}".splitlines()[0][:200]


LOCKED = "database is locked"
"""SQLite's error once another process has kept its database locked longer than it waits (5 s)."""


class StoreLocked(HpoError):
    """An SQLite store another process keeps locked: nothing can be written there for now."""


def locked_by(path: Path) -> str:
    """``PATH is locked by another process (process 1234 (its command line))``, the process named
    where this machine can tell."""
    holder = holders(path)
    return f"{path} is locked by another process{f' ({holder})' if holder else ''}"


def locked(path: Path, argument: str) -> StoreLocked:
    """The error for an SQLite store another process keeps locked (``locked_by``)."""
    return StoreLocked(f"{locked_by(path)}, longer than SQLite waits: end it or let it finish (a sqlite3 shell or "
                       "database browser with a transaction open?), then run again", argument=argument)


def unusable(path_or_url: object, what: str, error: BaseException, argument: str) -> HpoError:
    """The error for a store that exists but cannot be used (corrupt, half-made by something else),
    or that another process keeps locked (named where this machine can tell)."""
    reason = error_line(error)
    if isinstance(path_or_url, Path) and LOCKED in reason:
        return locked(path_or_url, argument)
    return HpoError(f"{path_or_url} is not a usable {what} ({reason}); move it aside to start a new one, or name "
                    "another", argument=argument)


CONNECT_TIMEOUT_S = 10
"""How long a connection to a PostgreSQL server may take before it is given up."""


def bounded(url: str) -> str:
    """``url`` with a connection timeout where it names PostgreSQL without one: libpq otherwise
    waits for ever on a server that takes the connection and never answers."""
    if not url.startswith("postgresql") or "connect_timeout=" in url:
        return url
    return f"{url}{'&' if '?' in url else '?'}connect_timeout={CONNECT_TIMEOUT_S}"


def port_unanswered(host: str, port: int, timeout_s: float) -> str | None:
    """Why nothing answers on ``host:port`` within ``timeout_s`` (``connection refused``,
    ``timed out``); None where something does."""
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as error:
        return "timed out" if isinstance(error, TimeoutError) else (error.strerror or str(error)).lower()
    return None


def store_lock(url: str, purpose: str, name: str, timeout_s: float = -1) -> Any:
    """A lock that every process using the store ``url`` can take, for ``purpose`` on ``name``
    (a study, a search): a lock file beside an SQLite store (one machine; one file for every
    ``name``), a PostgreSQL advisory lock keyed by both (every machine on the database). None for
    any other store. Waits at most ``timeout_s`` where that is not negative."""
    path = sqlite_path(url)
    if path is not None:
        return filelock.FileLock(f"{path}.{purpose}.lock", timeout=timeout_s)
    if url.startswith("postgresql"):
        return AdvisoryLock(url, f"{purpose}:{name}", timeout_s)
    return None


def lock_holder(lock: Any) -> str:
    """Who holds ``lock`` (a ``store_lock``), as far as this machine can tell: ``process 1234
    (hpo worker --study s), stopped``; empty where it cannot."""
    if isinstance(lock, AdvisoryLock):
        return lock.holder()
    return holders(Path(lock.lock_file))


def holders(path: Path) -> str:
    """The other processes holding a lock on the file ``path`` (a lock file's, SQLite's on its
    database), from the kernel's table of locks where there is one: ``process 1234 (its command
    line), stopped``; empty where none is found."""
    try:
        inode = str(path.stat().st_ino)
        locks = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return ""
    pids = []
    for line in locks:
        fields = line.split()  # 1: FLOCK ADVISORY WRITE 1234 fe:00:5678 0 EOF ("->" before a waiter's)
        if len(fields) > 5 and fields[1] in ("FLOCK", "POSIX") and fields[5].rsplit(":", 1)[-1] == inode:
            pid = int(fields[4])
            if pid != os.getpid() and pid not in pids:
                pids.append(pid)
    return "; ".join(_process(pid) for pid in pids[:2])


_PROCESS_STATES = {"T": "stopped (Ctrl-Z? kill -CONT {pid} resumes it)", "t": "stopped in a debugger",
                   "D": "waiting on its disk", "Z": "a zombie"}


def _process(pid: int) -> str:
    """``process 1234 (its command line), and its state where it is not running or sleeping``; a
    pool's worker (forked by the search's fork server) is named by its search's command line."""
    try:
        command = _command(pid)
        state, search = _stat(pid)
        if _forked(command):
            while _forked(command := _command(search)):  # the fork server: its parent ran the search
                search = _stat(search)[1]
            command = f"a worker of process {search} ({command[:100]})"
    except (OSError, IndexError, ValueError):
        return f"process {pid}"
    what = f"process {pid} ({command[:160]})"
    return f"{what}, {_PROCESS_STATES[state].format(pid=pid)}" if state in _PROCESS_STATES else what


def _command(pid: int) -> str:
    return " ".join(Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").replace("\0", " ").split())


def _stat(pid: int) -> tuple[str, int]:
    """A process's state (``R``, ``S``, ``T``...) and its parent's number."""
    fields = _stat_fields(pid)
    return fields[0], int(fields[1])


def _stat_fields(pid: int) -> list[str]:
    """``/proc/PID/stat`` from its third field on (what follows the command's name)."""
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()


def _forked(command: str) -> bool:
    """Whether a command line is that of a process multiprocessing started (a worker, its fork server)."""
    return " -c from multiprocessing." in command


def this_process() -> str | None:
    """This process, named so that another process can later tell whether it still runs: the
    kernel's boot, its PID namespace, its number and its start time (a number alone is reused);
    None where ``/proc`` cannot say (not Linux)."""
    try:
        return f"{_machine()}/{os.getpid()}/{_started(os.getpid())}"
    except (OSError, IndexError):
        return None


def process_ended(process: str) -> bool:
    """Whether the process ``this_process`` named has certainly ended: it ran under this boot of
    this kernel, in this PID namespace, and no process of its number and start time runs now.
    False where that cannot be told (another machine, container or boot: its heartbeat tells)."""
    try:
        boot, namespace, number, started = process.split("/")
        if f"{boot}/{namespace}" != _machine():
            return False
        pid = int(number)
    except (OSError, ValueError):
        return False
    try:
        return _started(pid) != started
    except (OSError, IndexError):  # no such process
        return True


@functools.cache
def _machine() -> str:
    """This boot of this kernel, and this process's PID namespace."""
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return f"{boot}/{os.readlink('/proc/self/ns/pid').removeprefix('pid:')}"


def _started(pid: int) -> str:
    """When process ``pid`` started, in clock ticks after boot (``/proc/PID/stat``'s 22nd field)."""
    return _stat_fields(pid)[19]


_ENGINES: dict[str, Any] = {}  # by URL: this process's engine for advisory locks on that database
_ENGINES_GUARD = threading.Lock()


class AdvisoryLock:
    """A PostgreSQL session-level advisory lock, held on a connection of its own while held
    (from one engine a process keeps for each database). Taking it waits at most ``timeout``
    seconds where that is not negative, then raises ``TimeoutError``, as a lock file does."""

    def __init__(self, url: str, name: str, timeout_s: float = -1) -> None:
        self.url = url
        self.name = name
        self.key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        self.timeout = timeout_s
        self._connection: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_connection": None}

    def __enter__(self) -> None:
        self.acquire()

    def acquire(self, timeout: float | None = None) -> None:
        """Take the lock, waiting at most ``timeout`` (``self.timeout`` where None) seconds where
        that is not negative; as ``filelock.FileLock.acquire``."""
        import sqlalchemy

        timeout = self.timeout if timeout is None else timeout
        with _ENGINES_GUARD:
            engine = _ENGINES.get(self.url)
            if engine is None:
                # named, so that a process waiting for the lock can say who holds it
                name = f"hpo process {os.getpid()} on {socket.gethostname()}"
                named = {} if "application_name=" in self.url else {"application_name": name}
                engine = _ENGINES[self.url] = sqlalchemy.create_engine(bounded(self.url), pool_pre_ping=True,
                                                                       connect_args=named)
        self._connection = engine.connect()
        if timeout < 0:
            self._connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": self.key})
            return
        deadline = time.monotonic() + timeout
        try_lock = sqlalchemy.text("SELECT pg_try_advisory_lock(:key)")
        while not self._connection.execute(try_lock, {"key": self.key}).scalar():
            if time.monotonic() >= deadline:
                self._connection.close()
                raise TimeoutError(f"another process held the lock {self.name!r} on the database for {timeout:g} s")
            time.sleep(0.05)

    def holder(self) -> str:
        """The process holding the lock, as the database knows it: ``process 1234 on host-a``
        (the name its connection gave), how long the connection has been idle, and the server
        process to end where its client cannot be (a machine gone)."""
        import sqlalchemy

        engine = _ENGINES.get(self.url)
        if engine is None:
            return ""
        query = sqlalchemy.text(
            "SELECT a.application_name, a.client_addr, a.state, a.pid, "
            "EXTRACT(EPOCH FROM now() - a.state_change) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = :high AND l.objid = :low AND l.objsubid = 1")
        key = self.key & 0xFFFFFFFFFFFFFFFF
        try:
            with engine.connect() as connection:
                row = connection.execute(query, {"high": key >> 32, "low": key & 0xFFFFFFFF}).first()
        except sqlalchemy.exc.SQLAlchemyError:
            return ""
        if row is None:
            return ""
        name, address, state, backend, idle_s = row
        who = name.removeprefix("hpo ") if name.startswith("hpo ") else f"{name or 'a client'} at {address}"
        idle = f", its connection {state} for {float(idle_s):.0f} s" if state.startswith("idle") else ""
        return f"{who}{idle}; SELECT pg_terminate_backend({backend}) ends it on the server"

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        import sqlalchemy

        try:
            self._connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
        finally:
            self._connection.close()
