"""The built-in objectives themselves (``objectives`` loads this module on first use: it imports torch)."""

from objectives import NAMES
from objectives._training import ClassifierObjective
from objectives.models import build_cnn1d, build_mlp

mnist1d_mlp = ClassifierObjective("mnist1d", build_mlp)
mnist1d_cnn = ClassifierObjective("mnist1d", build_cnn1d)
digits_mlp = ClassifierObjective("digits", build_mlp)

OBJECTIVES = {name: globals()[name] for name in NAMES}  # one list of names: the one read without torch
