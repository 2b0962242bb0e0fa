"""The Ray driver: the trial loop runs here, in the search's process (claims, MLflow, the store,
heartbeats, pruning); one Ray actor per resource slot runs the trials it is handed and streams
their reports back. A pruning decision is the loop's, as on the Optuna driver: the actor asks,
the loop answers from every report it has seen."""

from __future__ import annotations

import _thread
import functools
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpo._errors import HpoError
from hpo.dispatch import Printed, write_printed
from hpo.drivers._base import Driver
from hpo.drivers.ray import RayOptions
from hpo.drivers.ray._cluster import HeadWatch, connect, named_address, unanswered, use_token_if_any
from hpo.drivers.ray._runner import Asked, Ended, Event, Reported, TrialRunner, Verdict, Wanted
from hpo.loop import SETUP_SAID_AFTER_S, Started, TrialLoop, worker_name
from hpo.store import DONE
from hpo.strategies import WAIT
from hpo.trial import TrialRecord

os.environ.setdefault("RAY_DEDUP_LOGS", "0")

GATHER_S = 1.0
"""How long an actor gathers reports before it sends them (sooner for a question or an ending)."""
ASK_AGAIN_S = 0.5
"""After the store answered WAIT, or DONE while trials run elsewhere, when to ask it again."""


@dataclass(eq=False)
class _Slot:
    """One actor and what the loop handed it: its running trials, and what it is owed."""

    actor: Any
    size: int = 1
    """How many trials it trains at once (a population's rows)."""
    running: dict[int, Started] = field(default_factory=dict)
    batches: list[list[dict[str, Any]]] = field(default_factory=list)
    verdicts: list[tuple[int, int, Verdict]] = field(default_factory=list)
    granted: list[dict[str, Any]] | None = None
    call: Any = None
    """The ``exchange`` call in flight."""


class RayDriver(Driver):
    """Runs a search's trials on Ray actors: a local Ray instance, or the cluster the user named."""

    name = "ray"

    def __init__(self, options: RayOptions, home: Path) -> None:
        self.options = options
        self.fatal: HpoError | None = None
        self._fatal_said = False

    @property
    def device(self) -> str:
        return "cuda:0" if self.options.gpus_per_trial > 0 else "cpu"  # Ray pins each actor to its GPUs

    def start(self) -> None:
        if named_address(self.options.address) is None:
            # A local instance listens on loopback only: Ray otherwise binds and dials the
            # machine's network address even when nothing outside it takes part.
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        else:
            use_token_if_any()  # before Ray reads its settings
        import ray

        connect(ray, self.options.address)

    def run(self, loop: TrialLoop, objective: Callable[..., Any], population: int | str = 1) -> None:
        self.start()
        import ray

        address = named_address(self.options.address)
        actors = _Actors(ray, self, loop, objective, population)
        try:
            with HeadWatch(address or "", functools.partial(self._head_lost, loop, address)):
                actors.run()
        except HeadGone as gone:
            self.fatal = self.fatal or _head_gone(address, gone.cause)
        except KeyboardInterrupt:
            if self.fatal is None:
                raise
        finally:
            try:
                loop.close(self.device)
            finally:
                if self.fatal is None:
                    actors.stop()
        if self.fatal is not None:
            self._fatal_said = True  # the search's own line says it: an exit still owed says nothing more
            raise self.fatal

    def slots(self, ray: Any, n_trials: int) -> int:
        """How many trials run at once: as many as the cluster's CPUs and GPUs hold at each
        trial's request (at most ``max_concurrent``, and the trials left); a request no machine of
        the cluster can meet is refused in one line."""
        per_trial = {"CPU": self.options.cpus_per_trial, "GPU": self.options.gpus_per_trial}
        nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
        fits = sum(min(math.floor(res.get(kind, 0) / need + 1e-9) for kind, need in per_trial.items() if need > 0)
                   for res in nodes)
        if fits == 0:
            have = ", ".join(f"{kind} {max((r.get(kind, 0) for r in nodes), default=0):g}" for kind in per_trial)
            flag = "gpus_per_trial" if per_trial["GPU"] > 0 else "cpus_per_trial"
            raise HpoError(f"no machine of the Ray cluster has {per_trial['CPU']:g} CPUs and {per_trial['GPU']:g} "
                           f"GPUs for a trial (the largest has {have})", argument=flag)
        return max(1, min(fits, self.options.max_concurrent or fits, n_trials))

    def _head_lost(self, loop: TrialLoop, address: str | None, cause: str) -> None:
        """The named cluster's head stopped answering: its running trials are closed as
        interrupted (the main thread may be stuck in Ray), the search is stopped with one line,
        and exits within ``HARD_EXIT_AFTER_S`` if it cannot unwind."""
        if self.fatal is not None:
            return
        self.fatal = _head_gone(address, cause)
        loop.close(self.device)
        loop.tracker.flush(5.0)

        def hard_exit() -> None:
            if not self._fatal_said:
                loop.tracker.abort_search()
                print(f"hpo: error: {self.fatal}", file=sys.stderr, flush=True)
            os._exit(2)

        timer = threading.Timer(HARD_EXIT_AFTER_S, hard_exit)
        timer.daemon = True
        timer.start()
        _thread.interrupt_main()


PLACED_WITHIN_S = 60.0
"""How long the cluster may take to place the actors (start their processes)."""


def _amount(count: float, kind: str) -> str:
    return f"{count:g} {kind}" + ("" if count == 1 else "s")


class HeadGone(Exception):
    """The named cluster's head stopped answering."""

    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


def _head_gone(address: str | None, cause: str) -> HpoError:
    return HpoError(f"the Ray cluster at {address!r} stopped answering ({cause}); its running trials are closed as "
                    "interrupted: run the search again once the cluster is back")


HARD_EXIT_AFTER_S = 20.0
"""How long the search may take to unwind after its cluster's head died before it exits anyway
(Ray ends the process itself a minute after losing the head)."""


def _users_path() -> list[str]:
    """The search's Python path less the interpreter's own folders (its standard library and
    installed packages, which an actor has as its machine installed them): where the user's
    modules are, as Ray passes the current folder alone."""
    interpreter = tuple({sys.prefix, sys.base_prefix, sys.exec_prefix})
    return [folder for folder in sys.path
            if folder and not folder.startswith(interpreter) and "site-packages" not in folder]


class _Actors:
    """The loop's trials on a set of actors: each idle actor is handed claimed trials (as many
    as it trains at once), each busy one is polled (``exchange``) for what its trials did; a
    dead actor's trials are failed as lost (and so planned again) and the actor replaced."""

    def __init__(self, ray: Any, driver: RayDriver, loop: TrialLoop, objective: Callable[..., Any],
                 population: int | str) -> None:
        self.ray = ray
        self.driver = driver
        self.loop = loop
        self.metric = loop.plan.space.metric
        self.worker = worker_name()
        options = driver.options
        self.address = named_address(options.address)
        self.remote = ray.remote(TrialRunner).options(num_cpus=options.cpus_per_trial,
                                                      num_gpus=options.gpus_per_trial)
        self.objective = [ray.put(objective)]
        self.path = _users_path()
        self.population = population
        self._said: set[str] = set()
        self.slots = [self._start() for _ in range(driver.slots(ray, loop.trials_left()))]
        self._ask_at = 0.0  # when the store may be asked for a trial again
        self._claimed_all = False

    def _start(self) -> _Slot:
        return _Slot(self.remote.remote(self.loop.plan, self.objective, self.driver.device, self.path))

    def run(self) -> None:
        """Set every actor up, then hand out and follow trials until the budget has ended."""
        self._set_up(self.slots)
        while not self._over():
            self._hand_out()
            calls = {}
            for slot in self.slots:
                if slot.running and slot.call is None:
                    slot.call = slot.actor.exchange.remote(slot.batches, slot.verdicts, slot.granted, GATHER_S)
                    slot.batches, slot.verdicts, slot.granted = [], [], None
                if slot.call is not None:
                    calls[slot.call] = slot
            if not calls:
                time.sleep(ASK_AGAIN_S)  # nothing runs here: the store is asked again in a moment
                continue
            ready, _ = self.ray.wait(list(calls), num_returns=1, timeout=ASK_AGAIN_S)
            for ref in ready:
                slot = calls[ref]
                slot.call = None
                try:
                    events = self.ray.get(ref)
                except self.ray.exceptions.RayActorError:
                    self._lost(slot)
                else:
                    self._heard(slot, events)

    def _set_up(self, slots: list[_Slot]) -> None:
        """New actors, placed and set up. Those the cluster cannot place within
        ``PLACED_WITHIN_S`` (its resources are taken) are given up, and the search refused in one
        line if none was placed; the objective's setup then runs on each, and its failure ends
        the search."""
        placed = {slot.actor.ready.remote(): slot for slot in slots}
        _, waiting = self.ray.wait(list(placed), num_returns=len(placed), timeout=PLACED_WITHIN_S)
        for ref in waiting:
            self.ray.kill(placed[ref].actor)
            self.slots.remove(placed[ref])
        if not self.slots:
            raise self._not_placed()
        setups = [(slot, slot.actor.setup.remote(self.population)) for slot in slots if slot in self.slots]
        _, running = self.ray.wait([setup for _, setup in setups], num_returns=len(setups), timeout=SETUP_SAID_AFTER_S)
        if running:
            self.loop.listener.notice(f"the objective's setup has run for {SETUP_SAID_AFTER_S:g} s on {len(running)} "
                                      f"of {len(setups)} Ray actors; waiting for it (Ctrl-C stops the search)")
        for slot, setup in setups:
            try:
                error, slot.size, notices = self.ray.get(setup)
            except self.ray.exceptions.RayActorError as died:
                said = str(died).strip().splitlines()
                # an error as the actor started (its objective could not be unpickled) ends its
                # message, after the place it was raised; Ray's own reason for a death comes first
                cause = (said[-1] if died.actor_init_failed else said[0]) if said else type(died).__name__
                raise HpoError(f"its setup ended the Ray actor it ran on ({cause})", argument="objective") from None
            if error is not None:
                raise error
            for notice in set(notices) - self._said:
                self._said.add(notice)
                self.loop.listener.notice(notice)

    def _not_placed(self) -> HpoError:
        """Why no actor was placed: what the cluster has free against what a trial asks for
        tells other work holding it from nodes slow to start the actors' processes."""
        options = self.driver.options
        asked = {"CPU": options.cpus_per_trial, "GPU": options.gpus_per_trial}
        free, total = self.ray.available_resources(), self.ray.cluster_resources()
        kinds = [kind for kind in asked if asked[kind] or total.get(kind)]
        have = ", ".join(f"{free.get(kind, 0):g} of {_amount(total.get(kind, 0), kind)}" for kind in kinds)
        wants = ", ".join(_amount(asked[kind], kind) for kind in kinds if asked[kind])
        why = ("other work holds what a trial asks for" if any(free.get(kind, 0) < need for kind, need in asked.items())
               else "it did not start the actors' processes in time")
        return HpoError(f"the Ray cluster placed no trial's actor within {PLACED_WITHIN_S:g} s (free: {have}; a trial "
                        f"asks for {wants}): {why}", argument="address")

    def _over(self) -> bool:
        if self.driver.fatal is not None:
            return True
        busy = any(slot.running for slot in self.slots)
        if busy or not self._claimed_all:
            return False
        if time.monotonic() < self._ask_at:
            return False
        self._ask_at = time.monotonic() + ASK_AGAIN_S
        if self.loop.store.unfinished():  # another process is still finishing trials of this budget
            self._claimed_all = False
            return False
        return True

    def _hand_out(self) -> None:
        """A claimed trial for each idle actor, while the store has some."""
        for slot in self.slots:
            if slot.running or time.monotonic() < self._ask_at:
                continue
            batch = self.loop.claim(self.worker, self.driver.device, slot.size)
            if batch is DONE or batch is WAIT:
                self._claimed_all = batch is DONE
                self._ask_at = time.monotonic() + ASK_AGAIN_S
                return
            assert isinstance(batch, list)
            slot.running.update((started.number, started) for started in batch)
            slot.batches.append([started.claim.to_json() for started in batch])

    def _heard(self, slot: _Slot, events: list[Event]) -> None:
        ended: list[tuple[Started, TrialRecord]] = []  # finished together (a population's epoch), before
        tags = None  # anything that reads the store or the pruner next

        def finish() -> None:
            if ended:
                self.loop.finish(ended[:], tags)
                ended.clear()

        for event in events:
            if isinstance(event, Printed):  # a trial's print, above the progress bar
                write_printed(event)
                continue
            if isinstance(event, Wanted):  # a population's refill, of its group
                finish()
                batch = self.loop.claim(self.worker, self.driver.device, event.count, event.like)
                batch = batch if isinstance(batch, list) else []
                slot.running.update((started.number, started) for started in batch)
                slot.granted = [started.claim.to_json() for started in batch]
                continue
            started = slot.running.get(event.number)
            if started is None:
                continue
            if isinstance(event, Reported):
                self.loop.logged(started, event.step, event.values)
                if started.pruning is not None and self.metric in event.values:
                    started.pruning.observe(event.step, event.values[self.metric])
            elif isinstance(event, Asked):
                finish()
                decided = started.pruning.decide(event.step) if started.pruning is not None else None
                slot.verdicts.append((event.number, event.step,
                                      None if decided is None else (decided.reason, decided.detail)))
            elif isinstance(event, Ended):
                del slot.running[event.number]
                ended.append((started, TrialRecord.from_json(event.record)))
                tags = event.tags
        finish()

    def _lost(self, slot: _Slot) -> None:
        """The actor died (its process was killed, its machine left the cluster): its trials
        are failed as lost, to be planned again, and a fresh actor takes its place. Where the
        head of a named cluster went with it, the search ends (``HeadGone``) instead."""
        if self.address is not None and (cause := unanswered(self.address)) is not None:
            raise HeadGone(cause)
        self.loop.fail([started.claim.trial_id for started in slot.running.values()])
        slot.running.clear()
        fresh = self._start()
        self.slots[self.slots.index(slot)] = fresh
        self._set_up([fresh])

    def stop(self) -> None:
        """The actors go: their resources are free for what runs next on the cluster."""
        for slot in self.slots:
            self.ray.kill(slot.actor)
