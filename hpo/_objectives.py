"""Finding the objective a user names: a built-in, ``module:function`` or ``file.py:function``."""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hpo._errors import HpoError, unknown
from hpo.trial import raised_at


def resolve_objective(spec: str | Callable[..., Any] | None, default: str | None, space_folder: Path | None = None,
                      ) -> tuple[Callable[..., Any], str]:
    """The objective and the name it is recorded under, checked to be callable as
    ``objective(params, trial)``; ``space_folder``: that of the space file naming ``default``."""
    objective, name = _find(spec, default, space_folder)
    try:
        inspect.signature(objective).bind(None, None)
    except TypeError:
        signature = inspect.signature(objective)
        hint = ""
        if inspect.isclass(objective):  # its objects are the objectives, as the README's CancerMLP()
            made = f"{objective.__name__}()"
            hint = (f": it is a class; name an object of it, such as objective = {made} at the module's end"
                    if isinstance(spec, str) else f": it is a class; pass an object of it, {made}")
        elif list(signature.parameters) == ["trial"]:  # Optuna's objective(trial)
            hint = ": hpo passes each trial's parameters first, from the space file"
        elif list(signature.parameters) == ["config"]:  # Ray Tune's trainable(config)
            hint = (": hpo passes the trial too, whose trial.report(step, metric=value) takes the place of Ray Tune's "
                    "tune.report")
        raise HpoError(f"{name}{signature} cannot be called as objective(params, trial){hint}",
                       argument="objective") from None
    except ValueError:  # no signature to read (a builtin): let it be
        pass
    return objective, name


def unknown_parameters(space: Any, objective_name: str) -> list[str]:
    """Warnings for the space's parameters no built-in objective reads: for a built-in objective
    every one (its value would change nothing), for the user's own those that look like a
    misspelt built-in one (``batchsize``: did you mean ``batch_size``?)."""
    from objectives import NAMES, PARAMETERS

    built_in = objective_name in NAMES
    said = []
    for kind, names in (("searched parameter", space.params), ("fixed value", space.fixed)):
        for name in names:
            if name in PARAMETERS:
                continue
            close = difflib.get_close_matches(name, PARAMETERS, n=1)
            guess = f": did you mean {close[0]!r}?" if close else ""
            if built_in or close:
                said.append(f"{space.name}: {kind} {name!r} is not a parameter the built-in objectives read{guess}")
    return said


def fingerprint(objective: Callable[..., Any], name: str) -> str | None:
    """A short hash of the objective's source — the file of ``file.py:function``, else the code
    of its function or class — so that a rerun of a study with a changed objective is told; None
    where there is no source to read."""
    try:
        where = name.rpartition(":")[0]
        if where.endswith(".py"):
            source = Path(where).read_bytes()
        else:
            code = objective if inspect.isroutine(objective) or inspect.isclass(objective) else type(objective)
            source = inspect.getsource(code).encode()
    except (OSError, TypeError):
        return None
    return hashlib.sha256(source).hexdigest()[:12]


def _find(spec: str | Callable[..., Any] | None, default: str | None, space_folder: Path | None,
          ) -> tuple[Callable[..., Any], str]:
    if callable(spec):
        name = getattr(spec, "__qualname__", type(spec).__qualname__)
        module = getattr(spec, "__module__", None) or type(spec).__module__
        if module != "__main__" and "<locals>" not in name and isinstance(spec, type(resolve_objective)):
            return spec, f"{module}:{name}"  # importable: a joining worker can find it again
        return spec, name
    name = spec or default
    if not name:
        raise HpoError("none given and the space names no default 'objective'", argument="objective")
    if ":" not in name and not name.endswith(".py"):
        import objectives

        if name not in objectives.NAMES:
            raise HpoError(unknown("objective", name, objectives.NAMES, listed_as="built-in:"), argument="objective")
        return getattr(objectives, name), name
    where, _, attr = name.rpartition(":") if ":" in name else (name, ":", "")
    if not attr:
        raise HpoError(f"{name!r} names no function: write '{where}:FUNCTION'", argument="objective")
    if not where:
        raise HpoError(f"{name!r} names no file or module: write 'FILE.py{name}' or 'MODULE{name}'",
                       argument="objective")
    try:
        if where.endswith(".py"):
            path = Path(where)
            if not path.is_file():
                hint = _beside(space_folder, where, attr) if spec is None else ""  # the space file named it
                raise HpoError(f"{where}: file not found{hint}", argument="objective")
            module = _run_file(path)
        else:
            module = _import(where)
    except ImportError as error:
        raise HpoError(f"cannot import {where!r}: {error}", argument="objective") from None
    objective = getattr(module, attr, None)
    if not callable(objective):
        callables = [name for name, value in vars(module).items() if callable(value) and not name.startswith("_")]
        close = difflib.get_close_matches(attr, callables, n=1)
        guess = f"; did you mean {close[0]!r}?" if close else ""
        raise HpoError(f"{where!r} has no callable {attr!r}{guess}", argument="objective")
    return objective, name


def _beside(space_folder: Path | None, file: str, function: str) -> str:
    """Where the space file names a ``file`` not found from the current folder that lies beside
    the space file: the two ways to run it."""
    if space_folder is None or not (beside := space_folder / file).is_file():
        return ""
    return (f" in the current folder; it is beside the space file: run from {beside.parent}, or name it with "
            f"objective (--objective) '{beside}:{function}'")


def _import(name: str) -> Any:
    """The module ``name``, found as ``python -m`` finds it: installed, or in the current folder
    (the ``hpo`` command's own path does not hold it, as no console script's does)."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        top = name.split(".")[0]
        here = Path.cwd()
        if error.name != top or not ((here / f"{top}.py").is_file() or (here / top).is_dir()):
            raise
    _on_path(here)
    return importlib.import_module(name)


def _on_path(folder: Path) -> None:
    """``folder`` first on Python's path, as Python puts a script's own folder, so that the
    user's modules beside the objective import: in this process, in the pool's workers, which
    start from its path, and in Ray's actors, which put it first before they load the objective."""
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
        importlib.invalidate_caches()


def _run_file(path: Path) -> Any:
    """The module a ``.py`` file defines; a file that does not compile or fails as it runs is
    named with its line, in one line."""
    try:
        code = compile(path.read_bytes(), str(path), "exec")
    except SyntaxError as error:
        raise HpoError(f"{path}:{error.lineno}: SyntaxError: {error.msg}", argument="objective") from None
    _on_path(path.resolve().parent)
    module_spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(module_spec)  # type: ignore[arg-type]
    try:
        exec(code, module.__dict__)
    except Exception as error:
        raise HpoError(f"{raised_at(error)}: {type(error).__name__}: {error}".splitlines()[0],
                       argument="objective") from None
    return module
