"""A search space: parameters, the metric to optimise and a default objective, from YAML."""

from __future__ import annotations

import difflib
import hashlib
import importlib.resources
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from hpo._errors import HpoError, choices_hint, unknown
from hpo.spaces._foreign import foreign_entry
from hpo.spaces._params import CategoricalParam, Param, Scalar
from hpo.spaces._pruning import Pruning

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(d|h|min|m|sec|s)\s*")
_UNIT_S = {"d": 86400, "h": 3600, "min": 60, "m": 60, "sec": 1, "s": 1}


def seconds(value: Any) -> Any:
    """A duration in seconds: a number as it is, text as a number (``600``) or in units (``90s``,
    ``30m``, ``2h``, ``1h30m``, ``1.5d``); anything else is refused, saying what is taken."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return value  # pydantic's own refusal names the type
    if isinstance(value, str):
        text = value.strip().lower()
        try:
            value = float(text)
        except ValueError:
            parts = list(_DURATION_PART.finditer(text))
            if not parts or "".join(part.group(0) for part in parts) != text:
                raise ValueError(f"expected seconds or a duration like 90s, 30m, 2h or 1h30m, got {value!r}") from None
            value = sum(float(number) * _UNIT_S[unit] for number, unit in (part.groups() for part in parts))
    if not math.isfinite(value):
        raise ValueError(f"expected a finite number of seconds, got {value}")
    return value


Seconds = Annotated[float, BeforeValidator(seconds)]
"""A duration, given in seconds or in units (``30m``), kept in seconds."""


class SearchSpace(BaseModel):
    """What to search: parameters, the metric and its direction, and a default objective.

    Example:
        >>> space = SearchSpace.model_validate({
        ...     "name": "lr", "metric": "val_loss", "direction": "minimize",
        ...     "params": {"lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True}}})
        >>> space.grid(default_points=3)
        [{'lr': 0.0001}, {'lr': 0.00316...}, {'lr': 0.1}]
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    metric: str
    direction: Literal["minimize", "maximize"]
    objective: str | None = None
    params: dict[str, Param] = Field(min_length=1)
    fixed: dict[str, Scalar] = Field(default_factory=dict)
    """Values passed to the objective as they are, never searched (epochs, model width...)."""
    pruning: Pruning = Field(default_factory=Pruning)
    """The pruner's warm-up for this space's trials (the pruner itself is chosen per search)."""
    timeout: Seconds | None = Field(None, gt=0)
    """Seconds a trial may run (``90``, or ``30m``, ``2h``); one over it fails as ``timeout``
    (``--trial-timeout`` overrides)."""

    @property
    def sign(self) -> int:
        """1 where lower is better, -1 where higher is: ``sign * value`` ranks best first."""
        return direction_sign(self.direction)

    @property
    def epochs(self) -> int:
        """How many epochs a trial reports (the ``epochs`` fixed value; 25 where it has none)."""
        return int(self.fixed.get("epochs", 25))

    @model_validator(mode="after")
    def _check_conditions(self):  # type: ignore[no-untyped-def]
        names = list(self.params)
        for position, (name, param) in enumerate(self.params.items()):
            for parent, values in (param.condition or {}).items():
                if parent == name:
                    raise ValueError(f"parameter {name!r}: condition on itself")
                if parent not in self.params:
                    raise ValueError(f"parameter {name!r}: condition on unknown parameter {parent!r}")
                if names.index(parent) > position:
                    raise ValueError(f"parameter {name!r}: condition on {parent!r}, which must come before it")
                parent_param = self.params[parent]
                if isinstance(parent_param, CategoricalParam):
                    unknown = [v for v in values if v not in parent_param.choices]
                    if unknown:
                        raise ValueError(
                            f"parameter {name!r}: condition values {unknown} are not choices of {parent!r}"
                        )
        for name in self.fixed:
            if name in self.params:
                raise ValueError(f"parameter {name!r}: both searched and fixed")
        return self

    @property
    def fingerprint(self) -> str:
        """A short hash of the content: a resumed study must be searching the same space."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def active(self, params: dict[str, Any]) -> dict[str, Any]:
        """Drop parameters whose condition does not hold (in declaration order)."""
        kept: dict[str, Any] = {}
        for name, param in self.params.items():
            if name in params and param.is_active(kept):
                kept[name] = params[name]
        return kept

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        """One random configuration; inactive conditional parameters are left out."""
        params: dict[str, Any] = {}
        for name, param in self.params.items():
            if param.is_active(params):
                params[name] = param.sample(rng)
        return params

    def widest(self) -> dict[str, Any]:
        """One configuration with every number at its high end and every categorical at its
        largest number (else its first choice), inactive conditional parameters left out: the
        largest model and batch where width and batch size grow with their values."""
        params: dict[str, Any] = {}
        for name, param in self.params.items():
            if param.is_active(params):
                params[name] = param.widest()
        return params

    def grid(self, default_points: int = 3) -> list[dict[str, Any]]:
        """The cartesian product of every parameter's grid values, without duplicates (every
        point at once: ``Grid`` numbers them without making the list)."""
        from hpo.spaces._grid import Grid

        grid = Grid(self, default_points)
        return [grid.point(i) for i in range(len(grid))]

    def contains(self, params: dict[str, Any]) -> bool:
        """Whether a configuration lies in this space: bounds, choices and conditions."""
        seen: dict[str, Any] = {}
        for name, param in self.params.items():
            if param.is_active(seen):
                if name not in params or not param.contains(params[name]):
                    return False
                seen[name] = params[name]
        return set(params) == set(seen)


def direction_sign(direction: str) -> int:
    """1 for ``minimize``, -1 for ``maximize``: the one place the direction becomes a sign."""
    return 1 if direction == "minimize" else -1


_HIGHER_IS_BETTER = frozenset({"acc", "accuracy", "f1", "auc", "roc", "precision", "recall", "r2", "iou", "dice",
                                "map", "bleu", "top1", "top5"})
_LOWER_IS_BETTER = frozenset({"loss", "error", "err", "mse", "mae", "rmse", "nll", "perplexity", "ppl", "regret"})


def direction_doubt(space: SearchSpace) -> str | None:
    """A warning where the metric's name says the other direction (``val_accuracy`` minimized
    ranks the worst trials first); None where it agrees, or says nothing (``neg_loss``)."""
    words = set(re.split(r"[^a-z0-9]+", space.metric.lower()))
    if "neg" in words or "negative" in words:
        return None
    wanted = ("maximize" if words & _HIGHER_IS_BETTER and not words & _LOWER_IS_BETTER
              else "minimize" if words & _LOWER_IS_BETTER and not words & _HIGHER_IS_BETTER else space.direction)
    if wanted == space.direction:
        return None
    return (f"{space.name}: metric {space.metric!r} is {space.direction}d, which ranks the worst trials first: did "
            f"you mean direction: {wanted}?")


def resolve_space_path(space: str | Path) -> Path:
    """A path as given, or a bare name looked up in ./search_spaces then the bundled folder."""
    path = Path(space)
    if path.suffix in (".yaml", ".yml") or path.parent != Path("."):
        return path
    for folder in (Path("search_spaces"), bundled_spaces()):
        candidate = folder / f"{space}.yaml"
        if candidate.exists():
            return candidate
    return Path("search_spaces") / f"{space}.yaml"


def _named_spaces_hint(space: str | Path) -> str:
    """For a bare name (``lr-wd``), the names there are, the closest first."""
    if isinstance(space, Path) or Path(space).suffix or Path(space).parent != Path("."):
        return ""
    folders = (Path("search_spaces"), bundled_spaces())
    names = sorted({path.stem for folder in folders for path in folder.glob("*.yaml")})
    return f" {choices_hint(space, names, 'spaces by name:')}"


def bundled_spaces() -> Path:
    """The folder of the spaces installed with hpo (the ``search_spaces`` package's data)."""
    return Path(str(importlib.resources.files("search_spaces")))


def load_space(space: str | Path) -> SearchSpace:
    """Read and validate a space file; any mistake raises ``HpoError`` naming file and parameter."""
    path = resolve_space_path(space)
    if not path.is_file():
        raise HpoError(f"{path}: search space file not found{_named_spaces_hint(space)}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise HpoError(f"{path}: not a text file (a space file is YAML in UTF-8)") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise HpoError(f"{path}: not valid YAML{where}") from None
    return space_of(data, label=str(path), name=path.stem)


def space_of(data: Any, *, label: str = "space", name: str = "space") -> SearchSpace:
    """A space from the mapping a space file holds (named ``name`` unless it says); any mistake
    raises ``HpoError`` naming ``label`` (the file) and the parameter."""
    if not isinstance(data, Mapping):
        raise HpoError(f"{label}: expected a mapping with 'metric', 'direction' and 'params'")
    params = data.get("params")
    for param, value in (params.items() if isinstance(params, Mapping) else ()):
        if said := foreign_entry(param, value):
            raise HpoError(f"{label}: parameter {param!r}: {said}")
    if "params" not in data:  # a Ray Tune param_space, or Optuna's distributions, given as the space
        for param, value in data.items():
            if said := foreign_entry(param, value, bare=False):
                raise HpoError(f"{label}: {param!r} is a parameter, under 'params' beside the space's 'metric' and "
                               f"'direction': {said}")
    try:
        return SearchSpace.model_validate({"name": name, **data})
    except ValidationError as error:
        raise HpoError(f"{label}: {_describe(error)}") from None


def _describe(error: ValidationError) -> str:
    """The first validation error as 'parameter 'lr': message' or 'field 'x': message'. A key the
    file misspells is named as written, with the valid key it is closest to."""
    errors = error.errors()
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = [str(part) for part in first["loc"]]
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = f"unknown key {loc[-1]!r}{_FOREIGN_KEYS.get(loc[-1], '') if len(loc) == 1 else ''}"
        message += "" if message.endswith(")") else _closest(loc[-1], _valid_keys(loc[:-1]))
        if len(loc) == 1 and not message.endswith("?)") and isinstance(first["input"], Mapping) \
                and "type" in first["input"]:  # a parameter written where the space's own keys go
            message += " (a parameter: it goes under 'params')"
        loc = loc[:-1]
    elif first["type"] == "literal_error":  # pydantic's 'Input should be ...'
        message = unknown(loc[-1].replace("_", " "), first["input"], re.findall(r"'([^']*)'", first["ctx"]["expected"]))
    elif first["type"] == "union_tag_invalid":
        given = first["input"].get("type")
        word = str(given).lower().removeprefix("tune.").removeprefix("suggest_")
        meant = _TYPES_MEANT.get(word) or next(iter(difflib.get_close_matches(word, _TYPES, n=1)), None)
        message = f"unknown type {given!r} ({f'did you mean {meant}? ' if meant else ''}expected {_TYPES_LISTED})"
    elif first["type"] == "missing":  # pydantic's 'Field required'
        message = "missing" + (": the parameters to search, such as params: {lr: {type: float, low: 1.0e-4, "
                               "high: 0.1, log: true}}" if loc == ["params"] else "")
    elif first["type"] == "union_tag_not_found":
        message = f"missing 'type' ({_TYPES_LISTED})"
    if len(loc) >= 2 and loc[0] == "params":
        where = f"parameter {loc[1]!r}"
        rest = [part for part in loc[2:] if part not in ("float", "int", "categorical")]
        if rest:
            where += f" field {'.'.join(rest)!r}"
        return f"{where}: {message}"
    return f"field {'.'.join(loc)!r}: {message}" if loc else message


_TYPES = ["float", "int", "categorical"]
_TYPES_LISTED = "float, int or categorical"
_TYPES_MEANT = {"uniform": "float", "loguniform": "float with log: true", "quniform": "float with a step",
                "randint": "int", "lograndint": "int with log: true", "integer": "int", "choice": "categorical",
                "categories": "categorical", "str": "categorical", "bool": "categorical", "double": "float",
                "real": "float"}
"""Types a space may be written with elsewhere (Ray Tune's functions, Optuna's suggestions), and hpo's."""

_FOREIGN_KEYS = {
    "mode": " (Ray Tune's: write direction: minimize, or maximize)",
    "num_samples": " (Ray Tune's: the budget is the --trials flag, n_trials=)",
    "n_trials": " (the budget is the --trials flag, n_trials=)",
    "search_alg": " (Ray Tune's: the strategy is the --strategy flag, strategy=)",
    "sampler": " (Optuna's: the strategy is the --strategy flag, strategy=)",
    "scheduler": " (Ray Tune's: the pruner goes under 'pruning', or the --pruner flag)",
    "param_space": " (Ray Tune's: the parameters go under 'params')",
    "config": " (the parameters go under 'params')",
}
"""What a space written with Ray Tune's or Optuna's habits holds where a space's own keys go."""


def _valid_keys(loc: list[str]) -> list[str]:
    """The keys allowed where ``loc`` points: a space's, a parameter's (of its type), pruning's."""
    from hpo.spaces._params import CategoricalParam, FloatParam, IntParam

    if not loc:
        return list(SearchSpace.model_fields)
    if loc[0] == "pruning":
        return list(Pruning.model_fields)
    kind = {"float": FloatParam, "int": IntParam, "categorical": CategoricalParam}.get(loc[-1])
    return list(kind.model_fields) if kind else []


def _closest(word: str, keys: list[str]) -> str:
    match = difflib.get_close_matches(word, keys, n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""
