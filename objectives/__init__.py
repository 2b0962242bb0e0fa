"""Built-in objectives: real PyTorch training on data generated or shipped locally.

Each is ``objective(params, trial)``; none imports Optuna or Ray. Their names and parameters are
read without importing torch (a search of the user's own objective never needs it); the
objectives themselves load on first use.
"""

from typing import Any

from hpo.plan import TRAINING_DEFAULTS

NAMES = ("mnist1d_mlp", "mnist1d_cnn", "digits_mlp")
"""The built-in objectives, by the name a space or ``--objective`` gives them."""

PARAMETERS = (*TRAINING_DEFAULTS, "hidden", "channels")
"""Every parameter a built-in objective reads."""

_LOADED_ON_USE = {"OBJECTIVES", "ClassifierObjective", *NAMES}


def __getattr__(name: str) -> Any:
    if name in _LOADED_ON_USE:
        from objectives import _builtins

        return getattr(_builtins, name)
    raise AttributeError(f"module 'objectives' has no attribute {name!r}")


__all__ = ["NAMES", "OBJECTIVES", "PARAMETERS", "ClassifierObjective", "digits_mlp", "mnist1d_cnn", "mnist1d_mlp"]
