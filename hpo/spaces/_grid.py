"""A space's grid as numbered points, never materialised: point ``i`` of ``size`` and the number
of a point, in time independent of the grid's size (10^12 points cost what 10 do)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from hpo.spaces._space import SearchSpace


@dataclass(frozen=True)
class _Segment:
    """The points where the parameters that others are conditioned on take one set of values:
    their values, the axes of the other parameters active there, and where they start."""

    fixed: dict[str, Any]
    axes: list[tuple[str, list[Any]]]
    start: int
    size: int


class Grid:
    """The cartesian product of every parameter's grid values, each distinct point numbered
    ``0 .. size - 1``. A parameter whose condition does not hold is left out of the point, so
    points differing only in it are one; numbering goes segment by segment (one per set of
    values of the parameters conditions name, few), then in mixed radix over the other axes."""

    def __init__(self, space: SearchSpace, default_points: int = 3) -> None:
        axes = {name: list(dict.fromkeys(param.grid_values(default_points))) for name, param in space.params.items()}
        self.names = list(space.params)
        named = {parent for param in space.params.values() if param.condition for parent in param.condition}
        conditioning = [name for name in self.names if name in named]
        self.segments: list[_Segment] = []
        start = 0
        for values in itertools.product(*(axes[name] for name in conditioning)):
            chosen = dict(zip(conditioning, values, strict=True))
            seen: dict[str, Any] = {}
            free: list[tuple[str, list[Any]]] = []
            canonical = True
            for name, param in space.params.items():
                active = param.is_active(seen)
                if name in chosen:
                    if active:
                        seen[name] = chosen[name]
                    elif chosen[name] != axes[name][0]:  # left out: the segment of its first value holds it
                        canonical = False
                        break
                elif active:
                    free.append((name, axes[name]))
            if canonical:
                size = math.prod(len(values) for _, values in free)
                self.segments.append(_Segment(seen, free, start, size))
                start += size
        self.size = start
        self._index = {name: {_key(v): i for i, v in enumerate(values)} for name, values in axes.items()}

    def __len__(self) -> int:
        return self.size

    def point(self, number: int) -> dict[str, Any]:
        """The point numbered ``number``."""
        if not 0 <= number < self.size:
            raise IndexError(f"grid point {number} of {self.size}")
        segment = self.segments[_segment_of(self.segments, number)]
        rest, chosen = number - segment.start, {}
        for name, values in reversed(segment.axes):
            rest, i = divmod(rest, len(values))
            chosen[name] = values[i]
        point = {**segment.fixed, **chosen}
        return {name: point[name] for name in self.names if name in point}

    def number(self, point: dict[str, Any]) -> int | None:
        """The number of ``point``; None for a configuration that is not a point of the grid."""
        for segment in self.segments:
            if any(point.get(name, _MISSING) != value for name, value in segment.fixed.items()):
                continue
            if len(point) != len(segment.fixed) + len(segment.axes):
                return None
            number = 0
            for name, values in segment.axes:
                i = self._index[name].get(_key(point.get(name, _MISSING)))
                if i is None:
                    return None
                number = number * len(values) + i
            return segment.start + number
        return None


_MISSING = object()


def _key(value: Any) -> Any:
    return (type(value) is bool, value) if isinstance(value, int | float) else value


def _segment_of(segments: Sequence[_Segment], number: int) -> int:
    low, high = 0, len(segments) - 1
    while low < high:
        middle = (low + high + 1) // 2
        if segments[middle].start <= number:
            low = middle
        else:
            high = middle - 1
    return low


class Shuffle:
    """A seeded permutation of ``0 .. size - 1``, both ways: position ``k`` holds
    ``shuffle[k]``, and ``position(n)`` finds ``n`` again.

    Up to ``IN_MEMORY`` numbers it is numpy's ``permutation`` (the order grid search has always
    had, 16 bytes a point); above, a four-round Feistel network over the next even power of two,
    computed one number at a time and walking cycles back into range (at most four steps on
    average), so that a grid of any size costs nothing to order.
    """

    IN_MEMORY = 1 << 20
    _ROUNDS = 4

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self._order: np.ndarray | None = None
        if size <= self.IN_MEMORY:
            self._order = np.random.default_rng(seed).permutation(size)
            self._positions = np.argsort(self._order)
        self.half = max(1, (max(size - 1, 1).bit_length() + 1) // 2)
        self.mask = (1 << self.half) - 1
        self.keys = [_mix(seed * 0x9E3779B97F4A7C15 + r + 1) for r in range(self._ROUNDS)]

    def __getitem__(self, position: int) -> int:
        if self._order is not None:
            return int(self._order[position])
        value = position
        while True:
            value = self._forward(value)
            if value < self.size:
                return value

    def position(self, number: int) -> int:
        if self._order is not None:
            return int(self._positions[number])
        value = number
        while True:
            value = self._backward(value)
            if value < self.size:
                return value

    def _forward(self, value: int) -> int:
        left, right = value >> self.half, value & self.mask
        for key in self.keys:
            left, right = right, left ^ (_mix(right ^ key) & self.mask)
        return (left << self.half) | right

    def _backward(self, value: int) -> int:
        left, right = value >> self.half, value & self.mask
        for key in reversed(self.keys):
            left, right = right ^ (_mix(left ^ key) & self.mask), left
        return (left << self.half) | right


def _mix(value: int) -> int:
    """splitmix64's finaliser: a well-spread 64-bit hash of ``value``."""
    value = (value + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return value ^ (value >> 31)
