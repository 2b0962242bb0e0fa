"""Parameter definitions of a search space: data only, validated on construction."""

from __future__ import annotations

import math
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

Scalar = bool | int | float | str


class _Param(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    condition: dict[str, list[Scalar]] | None = None
    """Active only when every named parameter takes one of the listed values."""

    def is_active(self, params: dict[str, object]) -> bool:
        return self.condition is None or all(
            name in params and params[name] in values for name, values in self.condition.items()
        )


class _NumericParam(_Param):
    log: bool = False
    grid: list[float] | None = None
    grid_points: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _check_bounds(self):  # type: ignore[no-untyped-def]
        low, high = self.low, self.high  # type: ignore[attr-defined]
        if not low < high:
            raise ValueError(f"low ({low}) must be < high ({high})")
        if self.log and low <= 0:
            raise ValueError(f"log scale needs low > 0, got low={low}")
        step = getattr(self, "step", None)
        if step is not None and step <= 0:
            raise ValueError(f"step must be > 0, got {step}")
        if step is not None and self.log and (isinstance(self, FloatParam) or step != 1):
            raise ValueError("step and log scale cannot be combined")
        if step is not None:  # inclusive bounds: high is one of the values
            count = (high - low) / step
            if abs(count - round(count)) > 1e-9 * max(1.0, count):
                last = low + math.floor(count) * step
                raise ValueError(f"high ({high}) is not low ({low}) plus a multiple of step ({step}): the last value "
                                 f"would be {last:g}")
        for value in self.grid or []:
            if not low <= value <= high:
                raise ValueError(f"grid value {value} is outside [{low}, {high}]")
        if self.grid is not None and not self.grid:
            raise ValueError("grid must list at least one value")
        return self

    # The parameter's scale: log space for log-scaled parameters, else linear.
    def to_unit(self, value: float) -> float:
        return math.log(value) if self.log else float(value)

    def from_unit(self, u: float) -> float:
        return math.exp(u) if self.log else u

    def grid_values(self, default_points: int) -> list:
        if self.grid is not None:
            return [self.cast(v) for v in self.grid]
        k = self.grid_points or default_points
        lo, hi = self.to_unit(self.low), self.to_unit(self.high)  # type: ignore[attr-defined]
        if k == 1:
            raw = [self.from_unit((lo + hi) / 2)]
        else:
            raw = [self.from_unit(lo + (hi - lo) * i / (k - 1)) for i in range(k)]
        # Six significant digits: 0.001, not 0.0010000000000000002.
        return list(dict.fromkeys(self.cast(float(f"{v:.6g}")) for v in raw))

    def contains(self, value: object) -> bool:
        return isinstance(value, (int, float)) and self.low <= value <= self.high  # type: ignore[attr-defined]

    def widest(self) -> float:
        return self.cast(self.high)  # type: ignore[attr-defined]

    def sample(self, rng: np.random.Generator):
        lo, hi = self.to_unit(self.low), self.to_unit(self.high)  # type: ignore[attr-defined]
        return self.cast(self.from_unit(rng.uniform(lo, hi)))


class FloatParam(_NumericParam):
    """A real-valued parameter in [low, high], optionally log-scaled or stepped."""

    type: Literal["float"]
    low: float
    high: float
    step: float | None = None

    def cast(self, value: float) -> float:
        if self.step is not None:
            value = self.low + round((value - self.low) / self.step) * self.step
        return float(min(max(value, self.low), self.high))


class IntParam(_NumericParam):
    """An integer parameter; both bounds are inclusive (as in Optuna, unlike Tune's randint)."""

    type: Literal["int"]
    low: int
    high: int
    step: int | None = None

    def cast(self, value: float) -> int:
        step = self.step or 1
        value = self.low + round((value - self.low) / step) * step
        return int(min(max(value, self.low), self.high))

    def sample(self, rng: np.random.Generator) -> int:
        if self.log:
            # Uniform in log space over [low - 0.5, high + 0.5] so each end gets its share.
            lo, hi = math.log(self.low - 0.5), math.log(self.high + 0.5)
            return self.cast(math.exp(rng.uniform(lo, hi)))
        n_values = (self.high - self.low) // (self.step or 1) + 1
        return self.low + int(rng.integers(n_values)) * (self.step or 1)


class CategoricalParam(_Param):
    """One of a list of choices (strings, numbers or booleans)."""

    type: Literal["categorical"]
    choices: list[Scalar]
    grid: list[Scalar] | None = None

    @model_validator(mode="after")
    def _check_choices(self):  # type: ignore[no-untyped-def]
        if not self.choices:
            raise ValueError("choices must list at least one value")
        if len(set(map(repr, self.choices))) != len(self.choices):
            raise ValueError(f"choices repeat a value: {self.choices}")
        for value in self.grid or []:
            if value not in self.choices:
                raise ValueError(f"grid value {value!r} is not one of the choices {self.choices}")
        return self

    def grid_values(self, default_points: int) -> list:
        return list(self.grid if self.grid is not None else self.choices)

    def contains(self, value: object) -> bool:
        return value in self.choices

    def widest(self) -> Scalar:
        numbers = [c for c in self.choices if isinstance(c, (int, float)) and not isinstance(c, bool)]
        return max(numbers) if len(numbers) == len(self.choices) else self.choices[0]

    def sample(self, rng: np.random.Generator):
        return self.choices[int(rng.integers(len(self.choices)))]


Param = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]
