"""Parameters written as Ray Tune or Optuna write them, answered with the entry that says the same
in a space file. Read from the values themselves: neither Ray nor Optuna is imported."""

from __future__ import annotations

from typing import Any

from hpo._errors import yaml_scalar

_TUNE_CALLS = {("Float", "_Uniform"): "uniform", ("Float", "_LogUniform"): "loguniform", ("Float", "_Normal"): "randn",
               ("Integer", "_Uniform"): "randint", ("Integer", "_LogUniform"): "lograndint"}
"""Ray Tune's functions, by the class of what they return and of its sampler (``q`` before the
name where the sampler is quantized: ``tune.quniform``)."""


def foreign_entry(name: str, value: Any, *, bare: bool = True) -> str | None:
    """What to write instead of ``value`` for parameter ``name``: Ray Tune's search-space values
    (``tune.loguniform(1e-4, 0.1)``, ``tune.grid_search([...])``), Optuna's distributions, a bare
    list of values or one value (unless not ``bare``: where a space's own keys go); ``None`` for
    anything else."""
    kind = type(value)
    if isinstance(value, dict) and list(value) == ["grid_search"]:
        return f"tune.grid_search is Ray Tune's: write {name}: {_categorical(value['grid_search'])}"
    if isinstance(value, list | tuple) and bare:
        return f"a list of values is not an entry: write {name}: {_categorical(value)}"
    if isinstance(value, int | float | str | bool) and bare:
        return f"one value is not searched: put it under 'fixed' ({name}: {yaml_scalar(value)})"
    if kind.__module__.startswith("ray.tune"):
        return f"{_tune_call(value)} is Ray Tune's: {_tune_entry(name, value)}"
    if kind.__module__.startswith("optuna.distributions"):
        return f"optuna.distributions.{kind.__name__} is Optuna's: {_optuna_entry(name, value)}"
    return None


def _tune_sampler(value: Any) -> tuple[Any, bool, str]:
    """A Ray Tune value's sampler, whether it is quantized, and the class name of the sampler
    underneath (``_Uniform``, ``_LogUniform``, ``_Normal``)."""
    sampler = getattr(value, "sampler", None)
    quantized = type(sampler).__name__ == "Quantized"
    return sampler, quantized, type(sampler.sampler if quantized else sampler).__name__


def _tune_call(value: Any) -> str:
    _, quantized, inner = _tune_sampler(value)
    kind = type(value).__name__
    name = {"Categorical": "choice", "Function": "sample_from"}.get(kind) or _TUNE_CALLS.get((kind, inner),
                                                                                           kind.lower())
    return f"tune.{'q' if quantized else ''}{name}"


def _tune_entry(name: str, value: Any) -> str:
    kind = type(value).__name__
    if kind == "Categorical":
        return f"write {name}: {_categorical(value.categories)}"
    sampler, quantized, inner = _tune_sampler(value)
    if kind not in ("Float", "Integer") or inner not in ("_Uniform", "_LogUniform"):
        return f"a space file gives each parameter bounds: write {name}: {{type: float, low: ..., high: ...}}"
    low, high = value.lower, value.upper
    if kind == "Integer" and not quantized:
        high -= 1  # tune.randint's upper bound is excluded; a space file's is included
    log = inner == "_LogUniform"
    step = f", step: {yaml_scalar(sampler.q)}" if quantized and not log else ""
    return (f"write {name}: {{type: {'int' if kind == 'Integer' else 'float'}, low: {yaml_scalar(low)}, "
            f"high: {yaml_scalar(high)}{step}{', log: true' if log else ''}}}")


def _optuna_entry(name: str, value: Any) -> str:
    if hasattr(value, "choices"):
        return f"write {name}: {_categorical(value.choices)}"
    kind = "int" if type(value).__name__.startswith("Int") else "float"
    step = getattr(value, "step", None)
    step_text = f", step: {yaml_scalar(step)}" if step is not None and not (kind == "int" and step == 1) else ""
    return (f"write {name}: {{type: {kind}, low: {yaml_scalar(value.low)}, high: {yaml_scalar(value.high)}{step_text}"
            f"{', log: true' if getattr(value, 'log', False) else ''}}}")


def _categorical(choices: Any) -> str:
    return f"{{type: categorical, choices: [{', '.join(yaml_scalar(c) for c in choices)}]}}"
