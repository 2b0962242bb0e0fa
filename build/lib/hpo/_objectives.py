"""Finding the objective a user names: a built-in, ``module:function`` or ``file.py:function``."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hpo._errors import HpoError


def resolve_objective(spec: str | Callable[..., Any] | None, default: str | None) -> tuple[Callable[..., Any], str]:
    """The objective and the name it is recorded under."""
    if callable(spec):
        name = getattr(spec, "__qualname__", type(spec).__qualname__)
        module = getattr(spec, "__module__", None) or type(spec).__module__
        if module != "__main__" and "<locals>" not in name and isinstance(spec, type(resolve_objective)):
            return spec, f"{module}:{name}"  # importable: a joining worker can find it again
        return spec, name
    name = spec or default
    if not name:
        raise HpoError("--objective: none given and the space names no default 'objective'")
    if ":" not in name:
        from objectives import OBJECTIVES

        if name not in OBJECTIVES:
            raise HpoError(f"--objective: unknown objective {name!r} (built-in: {', '.join(OBJECTIVES)})")
        return OBJECTIVES[name], name
    where, _, attr = name.rpartition(":")
    try:
        if where.endswith(".py"):
            path = Path(where)
            if not path.is_file():
                raise HpoError(f"--objective: {where}: file not found")
            module_spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(module_spec)  # type: ignore[arg-type]
            module_spec.loader.exec_module(module)  # type: ignore[union-attr]
        else:
            module = importlib.import_module(where)
    except ImportError as error:
        raise HpoError(f"--objective: cannot import {where!r}: {error}") from None
    objective = getattr(module, attr, None)
    if not callable(objective):
        raise HpoError(f"--objective: {where!r} has no callable {attr!r}")
    return objective, name
