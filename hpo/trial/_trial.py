"""What an objective sees of a trial, the claim that starts one, and the record a finished trial leaves behind."""

from __future__ import annotations

import collections
import dataclasses
import datetime
import enum
import functools
import math
import os
import re
import sysconfig
import traceback
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from hpo._errors import yaml_scalar
from hpo.trial._signals import TrialTimeout, stop_requested

CUDA_OOM = "cuda_oom"
"""The reason of a trial that ran out of GPU memory (a batch too large is a normal outcome)."""
INTERRUPTED = "interrupted"
"""The reason of a trial whose search the user stopped (Ctrl-C): it runs again on resume."""
WORKER_LOST = "worker lost"
"""The reason of a trial whose process died (killed, machine gone): it runs again."""
TIMEOUT = "timeout"
"""The reason of a trial that ran past the search's time limit for one trial."""


class TrialState(str, enum.Enum):
    RUNNING = "running"
    COMPLETE = "complete"
    PRUNED = "pruned"
    FAILED = "failed"


class TrialPruned(Exception):
    """Ends a trial early, recorded as pruned: raised by ``Trial.report`` when a rule stops the
    trial, or by the objective itself after ``trial.should_prune()``, as with Optuna.

    ``reason`` says which rule ("median", "diverged"), ``detail`` what it saw
    (``0.263 > median 0.236 of 5 trials``). Raised bare by an objective, it takes the reason of
    the decision ``should_prune`` reported (else "objective").
    """

    def __init__(self, reason: str = "", detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def _is_pruned(error: BaseException) -> bool:
    """hpo's ``TrialPruned``, or Optuna's (``optuna.TrialPruned``) raised by an objective ported
    from Optuna: both mean the trial stops early, pruned."""
    return isinstance(error, TrialPruned) or any(
        cls.__name__ == "TrialPruned" and cls.__module__.startswith("optuna") for cls in type(error).__mro__)


@dataclass(frozen=True)
class Claim:
    """A trial started in the store: its parameters fixed, owned by the process that claimed it."""

    trial_id: int
    number: int
    params: dict[str, Any]
    stage: int
    seed: int
    retry_of: int | None = None
    worker: str = ""
    """The process that claimed it (``host:pid``)."""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Claim:
        return cls(**data)


class _Done:
    def __repr__(self) -> str:
        return "DONE"


DONE = _Done()
"""What ``claim`` returns once the budget is claimed (or the strategy has nothing left)."""


@dataclass(frozen=True)
class TrialRecord:
    """A trial as the strategies, the tracker and the result see it, whatever the engine."""

    number: int
    params: dict[str, Any]
    state: TrialState
    value: float | None = None
    stage: int = 0
    reason: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    device: str = "cpu"
    duration_s: float = 0.0
    node: str = ""
    """Where it ran: the host for the Optuna driver, the Ray node for the Ray driver."""
    where: str = ""
    """For a trial whose objective raised: the line of the user's code that raised (``file.py:42``)."""
    traceback: str = field(default="", repr=False)
    """For a trial whose objective raised: the traceback."""
    session: int = 0
    """Which run of the search claimed it (each ``hpo search`` of the study is one more)."""
    detail: str = ""
    """For a pruned trial: what the rule saw, and the epoch it stopped at."""
    curve: list[tuple[int, float]] = field(default_factory=list, repr=False)
    """The space's metric at each step it reported (kept in the study, for the search's report)."""
    run_id: str = ""
    """Its MLflow child run, where the run existed when the trial ended."""
    unread: list[str] = field(default_factory=list)
    """The parameters (searched or fixed) its objective never read: their values changed nothing."""
    worker: str = ""
    """The process that claimed it (``host:pid``), as the study holds it."""

    @property
    def finished(self) -> bool:
        return self.state is not TrialState.RUNNING

    @property
    def lost(self) -> bool:
        """Lost with its process or to Ctrl-C: its configuration is owed another run."""
        return self.state is TrialState.FAILED and self.reason in (INTERRUPTED, WORKER_LOST)

    @property
    def intermediate_values(self) -> dict[int, float]:
        """``curve`` by step, as Optuna's ``FrozenTrial.intermediate_values``."""
        return dict(self.curve)

    @property
    def duration(self) -> datetime.timedelta:
        """``duration_s``, as Optuna's ``FrozenTrial.duration``."""
        return datetime.timedelta(seconds=self.duration_s)

    def __getattr__(self, name: str) -> Any:
        """Optuna's trial attributes hpo keeps elsewhere: where (only missing attributes come here)."""
        raise _not_here(self, name, _RECORDED)

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "state": self.state.value}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrialRecord:
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields and k != "state"}, state=TrialState(data["state"]))


class DivergenceGuard:
    """Ends a trial whose metrics turn NaN or infinite, or whose loss explodes.

    A loss "explodes" when it exceeds ``factor`` times the first value reported for it.
    Any metric whose name contains "loss" is watched.
    """

    def __init__(self, factor: float = 10.0) -> None:
        if not factor > 1:
            raise ValueError(f"{factor=} must be > 1")
        self.factor = factor
        self._first: dict[str, float] = {}

    def diverged(self, metrics: Mapping[str, float]) -> bool:
        for name, value in metrics.items():
            if not math.isfinite(value):
                return True
            if "loss" in name:
                first = self._first.setdefault(name, value)
                if first > 0 and value > self.factor * first:
                    return True
        return False


class ReadParams(dict):  # type: ignore[type-arg]
    """The parameters an objective gets (a plain ``dict`` to it), noting which it reads: a
    searched parameter it never reads changes nothing, and the search says so. Reading a key
    (``params["lr"]``, ``.get``) reads it; iterating, copying or unpacking (``**params``) reads
    them all. ``plain`` is a copy that notes nothing."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        super().__init__(values)
        self.plain = dict(values)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def __iter__(self) -> Any:
        self.read.update(self.plain)
        return super().__iter__()

    def keys(self) -> Any:
        self.read.update(self.plain)
        return super().keys()

    def items(self) -> Any:
        self.read.update(self.plain)
        return super().items()

    def values(self) -> Any:
        self.read.update(self.plain)
        return super().values()

    def copy(self) -> dict[str, Any]:
        self.read.update(self.plain)
        return dict(self.plain)

    def unread(self) -> list[str]:
        return [key for key in self.plain if key not in self.read]


def plain(params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` as a plain dict, without noting a read (``ReadParams``)."""
    return dict(params.plain) if isinstance(params, ReadParams) else dict(params)


def trial_seed(search_seed: int, number: int) -> int:
    """A per-trial seed derived from the search seed, stable across resumes and engines."""
    return (search_seed * 1_000_003 + number) % (2**31 - 1)


class Pruning(Protocol):
    """A running trial's side of the pruner (``hpo.pruning.TrialPruning``, or a driver's proxy)."""

    def observe(self, step: int, value: float) -> None: ...

    def decide(self, step: int) -> TrialPruned | None: ...


class Trial:
    """The handle an objective gets: ``params`` come separately, this is for reporting.

    Example:
        >>> def objective(params, trial):
        ...     for epoch in range(3):
        ...         trial.report(epoch, val_loss=1.0 / (epoch + 1))
        ...     return 1.0 / 3
    """

    def __init__(
        self,
        number: int,
        *,
        seed: int,
        device: str = "cpu",
        stage: int = 0,
        metric: str | None = None,
        sign: int = 1,
        on_report: Callable[[int, dict[str, float]], None] | None = None,
        pruning: Pruning | None = None,
        guard: DivergenceGuard | None = None,
        context: Any = None,
    ) -> None:
        self.number = number
        self.seed = seed
        self.device = device
        self.stage = stage
        self.context = context
        """What the objective's ``setup`` returned on this worker (data already on the device)."""
        self._metric = metric
        self._sign = sign
        self._on_report = on_report
        self._pruning = pruning
        self._guard = guard
        self._stop: TrialPruned | None = None  # the decision of the last report, for should_prune
        self.history: list[tuple[int, dict[str, float]]] = []

    def __getattr__(self, name: str) -> Any:
        """Optuna's ``trial.suggest_*`` (only missing attributes come here): refused in one line
        saying where hpo's parameters come from, with the space file's entry for the one asked."""
        if name in _SUGGEST:
            return functools.partial(_suggested, name)
        raise _not_here(self, name, _OPTUNAS)

    def curve(self) -> list[tuple[int, float]]:
        """The space's metric at each step reported so far (a step's first value, as the study
        and the pruner keep it)."""
        firsts: dict[int, float] = {}
        for step, values in self.history:
            if self._metric in values:
                firsts.setdefault(step, values[self._metric])
        return list(firsts.items())

    def report(self, *args: Any, **metrics: float) -> None:
        """Record metrics for a step (an epoch): ``trial.report(step, val_loss=0.3, ...)``; raises
        ``TrialPruned`` if the trial must stop.

        Optuna's order, ``trial.report(value, step)`` with the space's metric as ``value``, is
        taken as Optuna takes it: the decision waits for ``trial.should_prune()``.
        """
        if len(args) == 2 and not metrics and self._metric is not None:
            value, step = args
            optuna_order = True
            metrics = {self._metric: value}
        elif len(args) == 1:
            (step,), optuna_order = args, False
        else:
            raise TypeError(self._misreported(args, metrics, ""))
        if isinstance(step, bool) or not isinstance(step, int | float) or step != int(step) or step < 0:
            raise TypeError(self._misreported(args, metrics, f"the step must be a whole number from 0 (the epoch), "
                                                             f"got {step!r}; "))
        values = {}
        for name, value in metrics.items():
            try:
                values[name] = as_number(value)
            except (TypeError, ValueError):
                raise TypeError(self._misreported(args, metrics, f"{name} is not one number; ")) from None
        self.record(int(step), values)
        self._stop = self.verdict()
        if self._stop is not None and not optuna_order:
            raise self._stop

    def record(self, step: int, metrics: Mapping[str, float]) -> None:
        """The first half of a report: the values kept, passed on, and shown to the pruner. A
        population records every member's report of a step before any is judged (``verdict``),
        so that members judge each other."""
        values = {name: float(value) for name, value in metrics.items()}
        self.history.append((step, values))
        if self._on_report is not None:
            self._on_report(step, values)
        if self._pruning is not None and self._metric in values:
            self._pruning.observe(step, values[self._metric])

    def verdict(self) -> TrialPruned | None:
        """The second half: whether the trial must stop after its last report (its loss diverged,
        or the pruner stops it)."""
        step, values = self.history[-1]
        if self._guard is not None and self._guard.diverged(values):
            seen = ", ".join(f"{name} {value:.4g}" for name, value in values.items())
            return TrialPruned("diverged", f"at epoch {step}: {seen}")
        if self._pruning is not None and self._metric in values:
            return self._pruning.decide(step)
        return None

    def _misreported(self, args: tuple[Any, ...], metrics: Mapping[str, Any], why: str) -> str:
        given = ", ".join([*map(described, args), *(f"{k}={described(v)}" for k, v in metrics.items())])
        return (f"trial.report({given}): {why}call trial.report(step, {self._metric or 'loss'}=value), or Optuna's "
                "trial.report(value, step)")

    def should_prune(self) -> bool:
        """Whether the trial must stop after its last report (then ``raise hpo.TrialPruned()``),
        as Optuna's ``trial.should_prune()``."""
        return self._stop is not None


def by_state(trials: Iterable[TrialRecord]) -> str:
    """How ``trials`` ended, as every summary says it: ``3 complete, 1 pruned, 0 failed`` (those
    running aside)."""
    counts = collections.Counter(t.state for t in trials)
    return ", ".join(f"{counts[s]} {s.value}" for s in TrialState if s is not TrialState.RUNNING)


def trials_text(count: int) -> str:
    """``1 trial``, ``3 trials``."""
    return f"{count} trial" if count == 1 else f"{count} trials"


def shown(value: Any) -> str:
    """A value as tables show it: floats to 4 significant digits (the exact values are in the
    study and ``best_config.json``)."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def how_it_ended(record: TrialRecord, metric: str) -> str:
    """How a trial ended and why, in a line: ``pruned at epoch 2: 0.263 > median 0.236 of 5 trials``."""
    if record.state is TrialState.COMPLETE:
        epoch = record.metrics.get("best_epoch")
        return f"complete: {metric} {record.value:.4g}" + (f" (best epoch {epoch:.0f})" if epoch else "")
    if record.state is TrialState.PRUNED:
        rule = "diverged" if record.reason == "diverged" else f"pruned by {record.reason}"
        return f"{rule} {record.detail}".strip() if record.detail else rule
    return f"failed: {record.reason}" + (f" (at {record.where})" if record.where else "")


@dataclass(frozen=True)
class Outcome:
    """How one call of an objective ended."""

    state: TrialState
    value: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    where: str = ""
    traceback: str = ""
    detail: str = ""


_SUGGEST = {"suggest_float": ("low", "high", "step", "log"), "suggest_int": ("low", "high", "step", "log"),
            "suggest_categorical": ("choices",), "suggest_uniform": ("low", "high"),
            "suggest_loguniform": ("low", "high"), "suggest_discrete_uniform": ("low", "high", "step")}
"""Optuna's ``trial.suggest_*`` methods, each with its arguments after the name, in order."""
SUGGESTED = "AttributeError: trial.suggest_"
"""How the reason of a trial that called one begins."""
_KEPT = ("hpo keeps the numbers an objective returns beside its metric (return {'val_loss': loss, 'epochs': 12}), in "
         "the study and on the trial's MLflow run")
_OPTUNAS = {"params": "hpo passes them first, as objective(params, trial)",
            "distributions": "the space file declares each parameter's", "set_user_attr": _KEPT, "user_attrs": _KEPT,
            "set_system_attr": _KEPT, "study": "hpo.search runs it, and returns its result (result.study_name, "
                                               "result.storage for optuna.load_study)"}
"""What an Optuna objective reads or calls on its trial besides ``suggest_*`` and ``report``, and
where hpo has it."""
_RETURNED = "the numbers its objective returned beside the metric are in trial.metrics"
_TIMED = "trial.duration is kept; each trial's MLflow run (trial.run_id) has its start and end"
_RECORDED = {"user_attrs": _RETURNED, "system_attrs": _RETURNED, "datetime_start": _TIMED, "datetime_complete": _TIMED,
             "distributions": "the space file declares each parameter's (result.space.params)"}
"""What an Optuna user reads on a finished trial that hpo keeps another way, and where."""


def _not_here(owner: object, name: str, optunas: Mapping[str, str]) -> AttributeError:
    """The error for an attribute ``owner`` lacks: where hpo keeps it, for one of Optuna's
    (``optunas``), else Python's own words."""
    if name in optunas:
        return AttributeError(f"trial.{name} is Optuna's: {optunas[name]}")
    return AttributeError(f"{type(owner).__name__!r} object has no attribute {name!r}")


OPTUNAS = "AttributeError: trial."
"""How the reason of a trial that used one of Optuna's trial attributes (``suggest_*`` included)
begins: every trial would fail so."""


RAY_REPORTED = "tune.report(...) is Ray Tune's"
"""How the reason of a trial that reported through Ray Tune's ``report`` begins."""
RAY_TRAIN_REPORTED = "ray.train.report(...) is Ray Train's"
"""How the reason of a trial that reported through Ray Train's ``report`` (Tune's, in Ray's newer
examples) begins."""
_RAY_OUTSIDE_TRAIN = "`report` cannot be used outside of a Ray Train training function"
"""How Ray Train refuses its ``report`` outside its trainers."""
_RAY_OUTSIDE_TUNE = "`report` is meant to only be called inside a function that is executed by a Tuner"
"""How Ray warns that its ``report`` was called outside Tune, and drops what it was given."""


@functools.cache
def _ray_reports_raise() -> None:
    """Ray's report outside Tune (where hpo runs trials) drops the metrics with a warning, once a
    process: in a process that runs trials, it raises instead, to fail the trial that called it."""
    warnings.filterwarnings("error", message=re.escape(_RAY_OUTSIDE_TUNE), category=UserWarning)


def _suggested(method: str, name: str, *args: Any, **kwargs: Any) -> Any:
    """Raise what a call of Optuna's ``trial.METHOD(name, ...)`` gets from hpo: read
    ``params[name]``, which the space file declares (its entry, written from the call)."""
    given = {**dict(zip(_SUGGEST[method], args, strict=False)), **kwargs}
    if method == "suggest_discrete_uniform":
        given["step"] = given.pop("q", given.get("step"))
    if method == "suggest_categorical":
        entry = f"{{type: categorical, choices: [{', '.join(yaml_scalar(c) for c in given.get('choices', ()))}]}}"
    else:
        kind = "int" if method == "suggest_int" else "float"
        bounds = "".join(f", {key}: {yaml_scalar(given[key])}" for key in ("low", "high", "step")
                         if given.get(key) is not None)
        log = given.get("log") or method == "suggest_loguniform"
        entry = f"{{type: {kind}{bounds}{', log: true' if log else ''}}}"
    raise AttributeError(f"trial.{method}({name!r}, ...) is Optuna's: hpo draws each trial's parameters from the "
                         f"space, so read params[{name!r}] (its entry in the space file: {name}: {entry})")



def run_objective(objective: Callable[..., Any], params: dict[str, Any], trial: Trial, metric: str) -> Outcome:
    """Call the objective and turn whatever happens into an ``Outcome``. It raises only when the
    search is being stopped from outside (Ctrl-C, SIGTERM): an objective's own
    ``KeyboardInterrupt`` or ``sys.exit()`` fails its trial alone, like any error."""
    _ray_reports_raise()
    try:
        returned = objective(params, trial)
    except TrialTimeout:
        outcome = Outcome(TrialState.FAILED, reason=TIMEOUT)
    except (KeyboardInterrupt, SystemExit) as error:
        if isinstance(error, KeyboardInterrupt) and stop_requested():
            raise
        outcome = ended_by(error, trial, metric)
    except Exception as error:  # a failing trial is information, not a crash of the search
        outcome = ended_by(error, trial, metric)
    else:
        return outcome_of(returned, trial, metric)
    if outcome.reason == CUDA_OOM:  # the error's frames, which held the trial's tensors, are gone
        release_cuda_cache()
    return outcome


def ended_by(error: BaseException, trial: Trial, metric: str) -> Outcome:
    """The outcome of a trial that raised: pruned (``TrialPruned``, hpo's or Optuna's, with its
    best value) or failed."""
    if _is_pruned(error):
        decided = trial._stop
        reason = getattr(error, "reason", "") or (decided.reason if decided else "objective")
        detail = getattr(error, "detail", "") if isinstance(error, TrialPruned) else str(error)
        if not detail and decided is not None and reason == decided.reason:
            detail = decided.detail
        return Outcome(TrialState.PRUNED, _best_value(trial, metric), reason=reason, detail=detail)
    if type(error).__name__ == "OutOfMemoryError":
        return Outcome(TrialState.FAILED, reason=CUDA_OOM)
    if isinstance(error, UserWarning) and str(error).startswith(_RAY_OUTSIDE_TUNE):
        return Outcome(TrialState.FAILED, reason=f"{RAY_REPORTED}: it drops what it is given outside Tune, where "
                       f"hpo runs trials; report with trial.report(step, {metric}=value)", where=raised_at(error),
                       traceback="".join(traceback.format_exception(error)))
    if isinstance(error, RuntimeError) and str(error).startswith(_RAY_OUTSIDE_TRAIN):
        return Outcome(TrialState.FAILED, reason=f"{RAY_TRAIN_REPORTED}: it runs only under Ray Train's trainer.fit(), "
                       f"not where hpo runs trials; report with trial.report(step, {metric}=value)",
                       where=raised_at(error), traceback="".join(traceback.format_exception(error)))
    said = str(error)
    reason = f"{type(error).__name__}: {said}" if said else type(error).__name__
    return Outcome(TrialState.FAILED, reason=reason[:500], where=raised_at(error),
                   traceback="".join(traceback.format_exception(error)))


def raised_at(error: BaseException) -> str:
    """The line of the user's own code an error came from (``train.py:42``): the innermost
    frame outside hpo, the standard library and installed packages (else the innermost)."""
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return ""
    library = (str(Path(__file__).parents[1]), *{sysconfig.get_path(p) for p in ("stdlib", "purelib", "platlib")})
    own = [f for f in frames if not f.filename.startswith(library) and not f.filename.startswith("<")]
    frame = (own or frames)[-1]
    try:
        name = os.path.relpath(frame.filename)
    except ValueError:
        name = frame.filename
    if name.startswith(".."):
        name = os.path.basename(frame.filename)
    return f"{name}:{frame.lineno}"


def as_number(value: Any) -> float:
    """A reported or returned metric as a float: a Python or NumPy number, or a tensor of one value
    (detached first: one that still holds its graph converts without PyTorch's warning)."""
    if callable(getattr(value, "detach", None)):
        value = value.detach()
    return float(value)


def described(value: Any) -> str:
    """``repr(value)`` on one line; an array or tensor of several values by its type and shape,
    an object whose ``repr`` holds its address by its type (so that trials failing alike say so
    alike)."""
    shape = getattr(value, "shape", ())
    if len(shape) > 0:
        return f"<{type(value).__name__} of shape {tuple(shape)}>"
    shown = " ".join(repr(value).split())
    return f"<{type(value).__module__}.{type(value).__qualname__}>" if " at 0x" in shown else shown


def outcome_of(returned: Any, trial: Trial, metric: str) -> Outcome:
    """The outcome of what an objective returned: the metric, or a dict holding it. Where a
    pruner reads the trial's reports, they must have held the metric."""
    if trial._pruning is not None and trial.history and not any(metric in v for _, v in trial.history):
        names = sorted({name for _, values in trial.history for name in values})
        return Outcome(TrialState.FAILED, reason=f"its reports had no {metric!r}, which the pruner reads "
                                                 f"(they had {', '.join(names)})")
    metrics = dict(returned) if isinstance(returned, Mapping) else {metric: returned}
    if metric not in metrics:
        return Outcome(TrialState.FAILED, reason=f"objective returned no {metric!r}")
    numbers = {}
    for name, value in metrics.items():
        try:
            numbers[name] = as_number(value)
        except (TypeError, ValueError):
            shown = f"{name!r}: {described(value)}" if isinstance(returned, Mapping) else described(value)
            return Outcome(TrialState.FAILED, reason=f"objective returned a non-number: {shown}"[:500])
    metrics = numbers
    value = metrics[metric]
    if not math.isfinite(value):
        if trial._guard is not None:
            return Outcome(TrialState.PRUNED, None, metrics, reason="diverged")
        return Outcome(TrialState.FAILED, None, metrics, reason=f"non-finite {metric}")
    return Outcome(TrialState.COMPLETE, value, metrics)


def release_cuda_cache() -> None:
    """Hand the memory a trial that ran out of it left cached back to the GPU, for the next
    trial here and for the other workers sharing that GPU."""
    import torch

    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def _best_value(trial: Trial, metric: str) -> float | None:
    """A pruned trial's value: its best report before it stopped (the untrained step 0 counts
    only where there is no other)."""
    reports = [(step, v[metric]) for step, v in trial.history if metric in v and math.isfinite(v[metric])]
    values = [value for step, value in reports if step > 0] or [value for _, value in reports]
    return min(values, key=lambda v: trial._sign * v) if values else None


def ranking(trials: Iterable[TrialRecord], sign: int) -> list[TrialRecord]:
    """Finished trials, best first: those with a value (complete, or pruned at their best
    before they were stopped) by it (``sign``: 1 to minimize, -1 to maximize), ties by number;
    failed trials and those without a value last. The one order of every leaderboard and of
    "the best trial"."""
    def key(t: TrialRecord) -> tuple[bool, float, int]:
        last = t.value is None or t.state is TrialState.FAILED
        return last, 0.0 if last else sign * t.value, t.number  # type: ignore[operator]

    return sorted((t for t in trials if t.finished), key=key)
