"""Built-in objectives: real PyTorch training on data generated or shipped locally.

Each is ``objective(params, trial)``; none imports Optuna or Ray.
"""

from hpo.population import TRAINING_DEFAULTS
from objectives._training import ClassifierObjective
from objectives.models import build_cnn1d, build_mlp

mnist1d_mlp = ClassifierObjective("mnist1d", build_mlp)
mnist1d_cnn = ClassifierObjective("mnist1d", build_cnn1d)
digits_mlp = ClassifierObjective("digits", build_mlp)

OBJECTIVES = {"mnist1d_mlp": mnist1d_mlp, "mnist1d_cnn": mnist1d_cnn, "digits_mlp": digits_mlp}

PARAMETERS = (*TRAINING_DEFAULTS, "hidden", "channels")
"""Every parameter a built-in objective reads."""

__all__ = ["OBJECTIVES", "PARAMETERS", "ClassifierObjective", "digits_mlp", "mnist1d_cnn", "mnist1d_mlp"]
