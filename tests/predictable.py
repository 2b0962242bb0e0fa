"""Objectives and a strategy whose trials the driver tests can predict, the same on every
engine. A module of their own, light to import: each Ray actor that runs one imports it (a test
module's imports, MLflow's among them, cost an actor two seconds before its first trial)."""

from __future__ import annotations

import math
import os
import signal
import time

from hpo.strategies import BaseStrategy, Suggestion
from objectives import digits_mlp


class ListStrategy(BaseStrategy):
    """Suggests the given configurations in order: a strategy whose trials a test can predict."""

    name = "list"

    def __init__(self, configs: list[dict]) -> None:
        super().__init__(0)
        self.configs = configs

    def suggest(self, space, history, n_trials):
        return Suggestion(self.configs[len(history)]) if len(history) < len(self.configs) else None


def boom_at_002(params, trial):
    if params["lr"] == 0.02:
        raise RuntimeError("boom")
    return digits_mlp(params, trial)


boom_at_002.test = digits_mlp.test
boom_at_002.step_zero_untrained = True  # digits_mlp's step 0 is its untrained model


def fails_until_fixed(params, trial):
    """Fails above a learning rate of 0.03 until the file ``params["fixed_when"]`` exists (a bug
    the user then fixes, the objective's source unchanged)."""
    if params["lr"] > 0.03 and not os.path.exists(params["fixed_when"]):
        raise RuntimeError("diverges above 0.03 for now")
    return params["lr"]


class SetupLog:
    """``quadratic``, with a setup that leaves a line per call (per worker, per Ray actor) in ``log``."""

    def __init__(self, log: str) -> None:
        self.log = log

    def setup(self, device):
        with open(self.log, "a") as log:
            log.write(f"{os.getpid()}\n")

    def __call__(self, params, trial):
        return quadratic(params, trial)


def quadratic(params, trial):
    for step in range(3):
        trial.report(step, loss=(params["lr"] - 0.01) ** 2 + 1 / (step + 1))
    return (params["lr"] - 0.01) ** 2


def plateau(params, trial):
    """Ten steps toward a plateau set by the learning rate's distance from 1e-2 (in decades)."""
    gap = abs(math.log10(params["lr"]) + 2)
    for step in range(10):
        trial.report(step, loss=gap + 1 / (step + 1))
    return gap + 0.1


SCRIPTED = {  # a loss curve over epochs 1-4 for each learning rate
    1.0: [1.0, 0.50, 0.40, 0.30], 2.0: [1.0, 0.52, 0.42, 0.32], 3.0: [1.0, 0.48, 0.38, 0.28],
    4.0: [1.0, 0.55, 0.45, 0.35], 5.0: [1.0, 0.45, 0.35, 0.25],  # the five the rule waits for
    6.0: [1.0, 0.49, 0.39, 0.31],  # below each median until epoch 4
    7.0: [1.0, 0.60, 0.40, 0.20],  # above it at epoch 2
    8.0: [1.0, 0.44, 0.34, 0.24],  # below it throughout
}


def scripted(params, trial):
    curve = SCRIPTED[params["lr"]]
    for epoch, loss in enumerate(curve, start=1):
        trial.report(epoch, loss=loss)
    return curve[-1]


def late(params, trial):
    """Trials 0-4 report a steady curve, trial 4 after three seconds; trial 5 reports its first
    epoch at once, then a worse second one five seconds later."""
    if params["lr"] == 5.0:
        trial.report(1, loss=0.5)
        time.sleep(5.0)
        trial.report(2, loss=0.9)
        return 0.9
    if params["lr"] == 4.0:
        time.sleep(3.0)
    for epoch, loss in enumerate([0.5, 0.4, 0.3], start=1):
        trial.report(epoch, loss=loss)
    return 0.3


class Warm:
    """digits_mlp with a setup that leaves a line per call in a file; every trial checks that
    it got what setup returned."""

    def __init__(self, log) -> None:
        self.log = log

    def setup(self, device):
        with open(self.log, "a") as log:
            log.write(f"{os.getpid()}\n")
        return digits_mlp.setup(device)

    def __call__(self, params, trial):
        assert trial.context is not None and trial.context.x_train.device.type == trial.device.split(":")[0]
        return digits_mlp(params, trial)


class SlowSetup:
    """An objective whose setup takes ``seconds`` (a dataset downloaded, say)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def setup(self, device):
        time.sleep(self.seconds)
        return self.seconds

    def __call__(self, params, trial):
        return trial.context


class MissingData:
    """An objective whose data is not where its setup looks."""

    def setup(self, device):
        raise FileNotFoundError("data/train.npy")

    def __call__(self, params, trial):
        return 1.0


def steady(params, trial):
    """Eight short steps: long enough for a scheduler to pause, stop or restart a trial."""
    gap = abs(math.log10(params["lr"]) + 2)
    for step in range(8):
        time.sleep(0.05)
        trial.report(step, loss=gap + 1 / (step + 1))
    return gap + 0.125


def killed_once(params, trial):
    """Kills its own process the first time (a crashed or OOM-killed worker), then trains."""
    marker = os.path.join(os.environ["HPO_TEST_MARKERS"], f"killed-{os.environ['HPO_TEST_ID']}")
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL))  # one process wins, even when two start at once
    except FileExistsError:
        return digits_mlp(params, trial)
    os.kill(os.getpid(), signal.SIGKILL)
    return digits_mlp(params, trial)


def quick_then_slow(params, trial):
    """Four steps at once, then two a little over a second apart; every trial the same curve,
    so that no pruner stops one."""
    for step in range(4):
        trial.report(step, loss=1 / (step + 1))
    for step in (4, 5):
        time.sleep(1.2)
        trial.report(step, loss=1 / (step + 1))
    return 1 / 6
