"""``SearchSettings``: every choice of how to run a search, validated in one place. ``hpo.search``
takes them as keyword arguments and ``hpo search`` as flags, both made from the fields here."""

from __future__ import annotations

import difflib
import pkgutil
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from hpo._errors import HpoError, unknown
from hpo.drivers import DRIVERS, DriverOptions, flags_of
from hpo.spaces import PRUNERS, Pruning, Seconds
from hpo.strategies import AUTO, NAMES, Strategy

DEFAULT_SPACE = "lr_wd"
"""The space ``hpo.search`` and ``make search`` search when none is named."""


_CHOICES = {"strategy": list(NAMES), "pruner": list(PRUNERS), "driver": list(DRIVERS)}
"""The names the fields that take a name or an object know."""
_OBJECTS: dict[str, tuple[Any, str]] = {
    "strategy": (Strategy, "an hpo strategy (a subclass of hpo.strategies.BaseStrategy)"),
    "pruner": (Pruning, "hpo.Pruning"),
    "driver": (DriverOptions, "hpo.OptunaOptions or hpo.RayOptions"),
}
"""What each of those fields takes besides a name: the type, and how a line names it."""
_OPTUNA_NAMES = {"TPESampler": "tpe", "GPSampler": "gp", "RandomSampler": "random", "GridSampler": "grid",
                 "NopPruner": "none", "MedianPruner": "median", "SuccessiveHalvingPruner": "successive-halving",
                 "HyperbandPruner": "hyperband"}
"""Optuna's samplers and pruners that hpo has under a name of its own."""


SPACE_FIELDS = {
    "direction": "the space names its metric and direction (`direction: maximize` in its file)",
    "metric": "the space names its metric and direction (`metric: val_loss` in its file)",
}
"""What a search is told of, given as a setting (``direction=``, ``--direction``), that its space says."""
_OPTUNA_ARGUMENTS = {
    "sampler": f"hpo plans trials with strategy= ({', '.join(NAMES)})",
    **SPACE_FIELDS,
    "directions": "hpo searches one metric: the space names it and its direction",
    "n_jobs": "trials run at once on the driver's workers: driver=hpo.OptunaOptions(workers=N)",
    "callbacks": "pass listener=, an hpo.SearchListener, to hear each trial start and end",
    "show_progress_bar": "hpo.search shows its progress bar unless quiet=True",
    "catch": "a trial that raises is recorded as failed, whatever it raises, and the search goes on",
    "load_if_exists": "hpo.search resumes its study whenever it exists (new_study=True starts another)",
}
"""What takes the place of the arguments of Optuna's ``create_study`` and ``optimize``."""
_SPACE_ARGUMENT = "the space is hpo.search's second argument: a space file's path, or its mapping"
_STORES = "home= holds the default stores (.hpo/); storage= and tracking_uri= name others"
_RAY_TUNE_ARGUMENTS = {
    "num_samples": "the budget is n_trials= (--trials)",
    "mode": "the space names its metric and direction (`direction: minimize` in its file)",
    "param_space": _SPACE_ARGUMENT,
    "config": _SPACE_ARGUMENT,
    "search_alg": _OPTUNA_ARGUMENTS["sampler"],
    "scheduler": "hpo stops trials with pruner= (median, successive-halving, hyperband), alike on every driver",
    "time_budget_s": "timeout= bounds the search's time (seconds, or '2h'): no trial starts after it",
    "stop": "a trial trains the epochs its objective runs (the space's fixed epochs); pruner= stops laggards",
    "resources_per_trial": "driver=hpo.RayOptions(cpus_per_trial=..., gpus_per_trial=...)",
    "max_concurrent_trials": "driver=hpo.RayOptions(max_concurrent=N)",
    "tune_config": "hpo.search takes its settings itself: n_trials=, strategy=, pruner=, timeout=",
    "run_config": "hpo.search takes its settings itself: study_name=, home=, storage=, tracking_uri=",
    "storage_path": _STORES,
    "local_dir": _STORES,
    "name": "study_name= names the search's study",
    "resume": _OPTUNA_ARGUMENTS["load_if_exists"],
    "verbose": "quiet=True shows nothing; summary=True prints the leaderboard at the end",
}
"""What takes the place of the arguments of Ray Tune's ``tune.run`` and ``Tuner`` (its
``TuneConfig`` and ``RunConfig``)."""
_FOREIGN_ARGUMENTS = {**_RAY_TUNE_ARGUMENTS, **_OPTUNA_ARGUMENTS}


def _engine_option(name: str, value: Any) -> str | None:
    """Where a keyword that is an engine's option (``workers``, ``ray_address``: as its flag
    reads) goes: ``driver=hpo.OptunaOptions(workers=4)``; None where no engine has it."""
    for engine, where in DRIVERS.items():
        options = pkgutil.resolve_name(where)
        field = options.keywords().get(name, name if name in options.flags() else None)
        if field is not None:
            return f"an option of the {engine} driver: driver=hpo.{options.__name__}({field}={value!r})"
    return None


def _not_taken(field: str, value: Any) -> str:
    """Why ``value`` (neither a name nor an object of the field's type) is refused, and what to
    pass instead: an Optuna sampler or pruner is answered with hpo's own of the same kind."""
    kind = "None" if value is None else type(value).__name__
    choices, (_, what) = _CHOICES[field], _OBJECTS[field]
    if type(value).__module__.split(".")[0] != "optuna" or field == "driver":
        return f"takes a name ({', '.join(choices)}) or {what}, got {kind}"
    kinds = "strategies" if field == "strategy" else "pruners"
    said = f"hpo runs its own {kinds}, alike on every driver, not Optuna's {kind}: "
    name = _OPTUNA_NAMES.get(kind)
    if name is None:
        return said + f"pass one of {', '.join(choices)}, or {what}"
    if field == "pruner" and name != "none":
        return said + (f"pass {field}={name!r}, or hpo.Pruning(pruner={name!r}, warmup_steps=..., warmup_trials=...) "
                       "for its warm-up")
    return said + f"pass {field}={name!r}" + (" (seeded by seed=...)" if field == "strategy" else "")


def _flag(flag: str | None) -> dict[str, Any]:
    """A field's command-line flag where it is not ``--field-name``; None: no flag (API only)."""
    return {"json_schema_extra": {"flag": flag}}


class SearchSettings(BaseModel):
    """How to run a search (everything but the objective and the space): each field is a keyword
    argument of ``hpo.search``/``hpo.prepare`` and a flag of ``hpo search``, with its help."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    objective: str | Callable[..., Any] | None = Field(
        None, description="Built-in name, module:function or file.py:function [default: the space's]")
    strategy: str | Strategy = Field(
        AUTO, description=f"One of: {', '.join(NAMES)} (auto: coarse-to-fine for one or two searched parameters, "
                          "TPE for more)")
    driver: str | DriverOptions = Field("optuna", description=f"Engine: {', '.join(DRIVERS)}")
    n_trials: int = Field(40, description="Trials in the study in all", **_flag("--trials"))
    pruner: str | Pruning = Field("none", description=f"One of: {', '.join(PRUNERS)}")
    warmup_steps: int | None = Field(
        None, description="Reports before a pruner judges a trial [default: the space's, or a fifth of its epochs]")
    warmup_trials: int | None = Field(
        None, description="Finished trials the median rule needs first [default: the space's, or 5]")
    storage: str | None = Field(
        None, description="The trial store, an Optuna storage URL [default: sqlite:///.hpo/optuna.db]")
    tracking_uri: str | None = Field(None, description="MLflow tracking URI [default: sqlite:///.hpo/mlflow.db]")
    experiment: str | None = Field(None, description="MLflow experiment [default: the space's name]")
    study_name: str | None = Field(
        None, description="Study name [default: SPACE-OBJECTIVE-STRATEGY-seedN]", **_flag("--study"))
    seed: int = Field(0, description="Seeds the strategy and, through it, every trial")
    divergence_guard: bool = Field(True, description="End a trial at once when its loss turns NaN or explodes")
    evaluate_test: bool = Field(True, description="Score the best configuration once on the test set",
                                **_flag("--test"))
    population: int | Literal["auto"] = Field(
        "auto", description="Trials trained together as one stacked model: N, or auto (32 on a CPU, fewer where "
                            "the budget would try a batch size or width under four times, one at a time where "
                            "the objective or the driver cannot)")
    trial_timeout: Seconds | None = Field(
        None, description="Time a trial may run before it fails as timeout, in seconds or as 30m, 2h "
                          "[default: the space's timeout, or none]")
    timeout: Seconds | None = Field(
        None, description="Time after which no new trial starts, in seconds or as 30m, 2h, 1h30m; running ones "
                          "finish, and the same command continues the search [default: none]")
    report: bool = Field(True, description="Write the search's report as it ends: plots, leaderboard, one HTML "
                                           "page (a second or so; hpo report writes it later)")
    new_study: bool = Field(False, description="Start a fresh study (NAME-2, NAME-3...) instead of resuming one")
    keep_study: bool = Field(False, description="Resume the study though the objective changed since it ran")
    home: Path = Field(Path(".hpo"), description="The folder of the default stores", **_flag(None))

    @classmethod
    def of(cls, **given: Any) -> SearchSettings:
        """The settings from keyword arguments; the first thing wrong is one ``HpoError`` naming it."""
        if unknown := [name for name in given if name not in cls.model_fields]:
            close = difflib.get_close_matches(unknown[0], list(cls.model_fields), n=1)
            option = _engine_option(unknown[0], given[unknown[0]]) or cls._flag_named(unknown[0], given[unknown[0]])
            hint = f": {_FOREIGN_ARGUMENTS[unknown[0]]}" if unknown[0] in _FOREIGN_ARGUMENTS else (
                f": {option}" if option else f"; did you mean {close[0]!r}?" if close else "")
            raise HpoError(f"unexpected keyword argument {unknown[0]!r}{hint}")
        try:
            return cls(**given)
        except ValidationError as error:
            first = error.errors()[0]
            message = str(first["msg"]).removeprefix("Value error, ")
            raise HpoError(message, argument=str(first["loc"][0])) from None

    @classmethod
    def _flag_named(cls, name: str, value: Any) -> str | None:
        """Where a keyword named as a flag reads (``study`` for ``--study``) is another field:
        ``the flag --study is study_name='x' here``; None where no flag reads so."""
        for field, flag in cls.flags().items():
            if flag.removeprefix("--").replace("-", "_") == name != field:
                return f"the flag {flag} is {field}={value!r} here"
        return None

    @classmethod
    def flags(cls) -> dict[str, str]:
        """Each field's flag (``n_trials``: ``--trials``); fields the API alone takes are left out."""
        return flags_of(cls)

    @field_validator("strategy", "pruner", "driver", mode="before")
    @classmethod
    def _name_or_object(cls, value: Any, info: ValidationInfo) -> Any:
        """Anything but a name or an object of the field's type (an Optuna sampler) is refused here,
        in a line saying what to pass, rather than as a string it is not."""
        if not isinstance(value, str | _OBJECTS[str(info.field_name)][0]):
            raise ValueError(_not_taken(str(info.field_name), value))
        return value

    @field_validator("strategy", "pruner", "driver")
    @classmethod
    def _known_name(cls, value: Any, info: ValidationInfo) -> Any:
        """A name is one of the field's choices; an object (a strategy, ``Pruning``, options) is taken."""
        choices = _CHOICES[str(info.field_name)]
        if isinstance(value, str) and value not in choices:
            raise ValueError(unknown(str(info.field_name), value, choices))
        return value

    @field_validator("n_trials", "seed", mode="before")
    @classmethod
    def _given(cls, value: Any, info: ValidationInfo) -> Any:
        """Optuna's ``None`` for either (trials until the timeout; an unseeded sampler), said in hpo's terms."""
        if value is None:
            raise ValueError({"n_trials": "must be a number of trials, got None: Optuna's n_trials=None runs until "
                                          "its timeout, hpo's budget is trials (timeout= bounds its time too)",
                              "seed": "must be a whole number, got None: hpo seeds every search, so that the same "
                                      "seed gives the same trials"}[str(info.field_name)])
        return value

    @field_validator("n_trials")
    @classmethod
    def _at_least_one(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be at least 1, got {value}")
        return value

    @field_validator("warmup_steps", "warmup_trials", "seed")
    @classmethod
    def _not_negative(cls, value: int | None) -> int | None:
        if value is not None and value < 0:
            raise ValueError(f"must be at least 0, got {value}")
        return value

    @field_validator("trial_timeout", "timeout")
    @classmethod
    def _seconds(cls, value: float | None) -> float | None:
        if value is not None and not value > 0:
            raise ValueError(f"must be more than 0 seconds, got {value}")
        return value

    @field_validator("population", mode="before")
    @classmethod
    def _population(cls, value: Any) -> int | str:
        return parse_population(value)

    @field_validator("keep_study")
    @classmethod
    def _one_study(cls, keep: bool, info: ValidationInfo) -> bool:
        if keep and info.data.get("new_study"):
            raise ValueError("resumes the study, and new_study (--new-study) starts a fresh one: give one of them")
        return keep


def parse_population(value: Any) -> int | str:
    """A population size as given (``8``, ``"8"``) made a number, or ``"auto"``."""
    if value == "auto":
        return value
    if isinstance(value, bool):  # int(True) is 1: population=True would train one trial at a time
        raise ValueError(f"expected a number or 'auto', got {value!r}")
    try:
        size = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected a number or 'auto', got {value!r}") from None
    if size < 1:
        raise ValueError(f"must be at least 1, got {size}")
    return size


def is_duration(name: str) -> bool:
    """Whether the field is a duration (``Seconds``: ``90``, ``30m``, ``2h``)."""
    return Seconds in typing.get_args(SearchSettings.model_fields[name].annotation)


def click_type(name: str) -> type | None:
    """The Python type ``hpo search`` parses a field's flag into: int, float, bool or str."""
    annotation = SearchSettings.model_fields[name].annotation
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    kinds = typing.get_args(annotation) if union else (annotation,)
    for kind in (bool, int, float):
        if kinds == (kind,) or set(kinds) == {kind, type(None)}:
            return kind
    return str
