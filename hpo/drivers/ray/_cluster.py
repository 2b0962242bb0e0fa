"""Reaching the Ray cluster a search runs on: the one the user named (``--ray-address`` or
``RAY_ADDRESS``), started as Ray's docs say (``ray start --head``, token authentication on), or
a fresh local instance, never a cluster nobody named (a stopped head leaves its address behind
in Ray's temporary folder, which a bare ``ray.init()`` would try to join)."""

from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

from hpo._errors import HpoError
from hpo.files import port_unanswered

CONNECT_TIMEOUT_S = 5.0
"""How long the head's port may take to answer before the search is refused."""


def named_address(address: str | None) -> str | None:
    """The cluster the user named: the option, else ``RAY_ADDRESS``; None for a local instance."""
    return address or os.environ.get("RAY_ADDRESS") or None


def refusal(message: str, address: str | None) -> HpoError:
    """A refusal of the named cluster, naming where its address came from: the option
    (``--ray-address``), or ``RAY_ADDRESS``, which the user may have set for another tool."""
    if address:
        return HpoError(message, argument="address")
    return HpoError(f"RAY_ADDRESS: {message}")


def connect(ray: Any, address: str | None) -> None:
    """Attach this process to the named cluster, or start a local instance; one line (an
    ``HpoError`` naming the address and the cause) where the cluster cannot be reached."""
    if ray.is_initialized():
        return
    named = named_address(address)
    if named is not None:
        check_reachable(named, address)
        use_token_if_any()
    options = {"include_dashboard": False} if named is None else {}
    try:
        ray.init(address=named or "local", log_to_driver=False, logging_level=logging.ERROR,
                 ignore_reinit_error=True, **options)
    except (ConnectionError, ValueError, RuntimeError) as error:
        cause = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise refusal(f"cannot reach a Ray cluster at {named!r}: {cause}", address) from None


def head_endpoint(address: str) -> tuple[str, int] | None:
    """The head's host and port in ``host:port`` or ``ray://host:port`` (None for ``auto``)."""
    bare = address.removeprefix("ray://")
    host, _, port = bare.rpartition(":")
    if not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def check_reachable(named: str, option: str | None = None) -> None:
    """Refuse, in one line and within ``CONNECT_TIMEOUT_S``, an address nothing answers on, or
    one of the head's web addresses (``http://HOST:8265``, the dashboard, which Ray's job
    submission reads from ``RAY_ADDRESS``), where a search needs the head's own port."""
    if named.startswith(("http://", "https://")):
        raise refusal(f"{named!r} is a web address (Ray's dashboard, which `ray job submit` takes); a search "
                      "joins the cluster at its head's port, as `ray start --head` prints it: "
                      "`ray start --address='HOST:6379'` means HOST:6379", option)
    cause = unanswered(named)
    if cause is not None:
        raise refusal(f"cannot reach a Ray cluster at {named!r}: {cause} (is its head running? "
                      "`ray start --head` starts one)", option)


def unanswered(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> str | None:
    """Why the head's port does not answer (``connection refused``); None where it does, or
    where the address names no port to try."""
    endpoint = head_endpoint(address)
    return None if endpoint is None else port_unanswered(*endpoint, timeout_s)


def use_token_if_any() -> None:
    """Authenticate with Ray's token where one is at hand and the mode is not chosen, as Ray does
    for a local cluster it finds by itself: Ray 2.60's ``ray start --head`` turns token
    authentication on wherever a token exists, but a client given an address does not. A cluster
    run without authentication while a token is at hand needs ``RAY_AUTH_MODE=disabled``."""
    if os.environ.get("RAY_AUTH_MODE"):
        return
    token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    if os.environ.get("RAY_AUTH_TOKEN") or token_file.is_file():
        enable_token_auth()


def enable_token_auth() -> None:
    """Token authentication for this process and the ones it starts (``RAY_AUTH_MODE=token``).
    Ray reads its settings once, as it is imported: where it already is, they are read again,
    through Ray's own private helper (``ray start`` uses it), the one Ray internal hpo calls."""
    os.environ["RAY_AUTH_MODE"] = "token"
    if "ray" not in sys.modules:
        return
    try:
        from ray._raylet import Config
    except ImportError:  # another Ray: the variable, read at its import, is all there is
        raise HpoError("Ray was imported before the search could turn its token authentication on: set "
                       "RAY_AUTH_MODE=token before Python starts", argument="address") from None
    Config.initialize("")


class HeadWatch:
    """Watches the head of a named cluster while a search runs on it: once its port has stopped
    answering ``misses`` times in a row (``every_s`` apart), ``on_lost(cause)`` runs, once.

    Ray itself ends a process whose head is gone only after a minute, with a line of its own and
    the trials left running; the search ends sooner, in one line of its own, its trials closed.
    """

    def __init__(self, address: str, on_lost: Any, *, every_s: float = 2.0, misses: int = 3) -> None:
        self.address = address
        self.endpoint = head_endpoint(address)
        self.on_lost = on_lost
        self.every_s = every_s
        self.misses = misses
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="hpo-ray-head-watch", daemon=True)

    def __enter__(self) -> HeadWatch:
        if self.endpoint is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    def _watch(self) -> None:
        missed = 0
        while not self._stop.wait(self.every_s):
            cause = unanswered(self.address, self.every_s)
            missed = 0 if cause is None else missed + 1
            if missed >= self.misses and not self._stop.is_set():
                self.on_lost(cause)
                return
