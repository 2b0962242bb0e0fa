"""Training a classifier with the trial's hyperparameters; no Optuna or Ray anywhere here."""

from __future__ import annotations

import copy
import math
from collections import ChainMap
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hpo.population import OPTIMIZERS, TRAINING_DEFAULTS, Recipe, make_schedule
from objectives._data import Splits, load_splits

DEFAULTS = TRAINING_DEFAULTS


def make_optimizer(params: Mapping[str, Any], weights: Any) -> torch.optim.Optimizer:
    """The optimizer ``params["optimizer"]`` names, with its learning rate and weight decay.

    ``adam`` applies weight decay as an L2 penalty; ``adamw`` decouples it (Loshchilov & Hutter).
    """
    name, lr, wd = params["optimizer"], params["lr"], params["weight_decay"]
    if name == "sgd":
        return torch.optim.SGD(weights, lr=lr, weight_decay=wd)
    if name in ("sgd_momentum", "nesterov"):
        return torch.optim.SGD(
            weights, lr=lr, momentum=params["momentum"], nesterov=name == "nesterov", weight_decay=wd
        )
    if name == "adam":
        return torch.optim.Adam(weights, lr=lr, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(weights, lr=lr, weight_decay=wd)
    if name == "rmsprop":
        return torch.optim.RMSprop(weights, lr=lr, weight_decay=wd)
    if name == "adagrad":
        return torch.optim.Adagrad(weights, lr=lr, weight_decay=wd)
    raise ValueError(f"unknown optimizer {name!r} (choose from {', '.join(OPTIMIZERS)})")


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy."""
    model.eval()
    logits = model(x)
    loss = F.cross_entropy(logits, y).item()
    accuracy = (logits.argmax(dim=1) == y).float().mean().item()
    return loss, accuracy


class ClassifierObjective:
    """Trains ``build(params, splits)`` on a dataset; validation loss and accuracy every epoch.

    Step 0 reports the untrained model (its loss near log(classes) is what the divergence
    guard measures an explosion against); steps 1..epochs report each epoch. Early stopping
    keeps the epoch with the best validation loss (``patience`` epochs without
    improvement end training). The trial's device, seed and reporting come from ``trial``;
    ``test`` retrains the same configuration with the same seed and scores the test set once.

    Example:
        >>> objective = ClassifierObjective("mnist1d", build_mlp)
        >>> objective({"lr": 1e-3, "epochs": 2}, trial)  # doctest: +SKIP
        {'val_loss': 1.9, 'val_accuracy': 0.31, ...}
    """

    step_zero_untrained = True
    """Step 0 is the untrained model: MLflow logs it as ``initial_*``, apart from the curves."""

    def __init__(self, dataset: str, build: Callable[[Mapping[str, Any], Splits], nn.Module]) -> None:
        self.dataset = dataset
        self.build = build

    def setup(self, device: str) -> Splits:
        """The data on ``device``: done once per worker, reused by every trial there."""
        return load_splits(self.dataset, device)

    def __call__(self, params: Mapping[str, Any], trial: Any) -> dict[str, float]:
        _, metrics = self.fit(params, trial, report=trial.report)
        return metrics

    def population(self, params: Mapping[str, Any], trial: Any) -> Recipe:
        """What hpo needs to train many trials of this model at once: the same procedure as
        ``fit``, on stacked members (``hpo.population``)."""
        splits = self._splits(trial)
        return Recipe(
            build=lambda member: self.build(ChainMap(member, DEFAULTS), splits),
            train=(splits.x_train, splits.y_train),
            validation=(splits.x_val, splits.y_val),
            defaults=DEFAULTS,
        )

    def test(self, params: Mapping[str, Any], trial: Any) -> dict[str, float]:
        model, _ = self.fit(params, trial, report=None)
        splits = self._splits(trial)
        loss, accuracy = evaluate(model, splits.x_test, splits.y_test)
        return {"loss": loss, "accuracy": accuracy}

    def _splits(self, trial: Any) -> Splits:
        context = getattr(trial, "context", None)
        return context if isinstance(context, Splits) else self.setup(str(trial.device))

    def fit(
        self, params: Mapping[str, Any], trial: Any, report: Callable[..., None] | None
    ) -> tuple[nn.Module, dict[str, float]]:
        p = ChainMap(params, DEFAULTS)  # not a copy: what the training reads is noted (hpo's ReadParams)
        splits = self._splits(trial)
        torch.manual_seed(trial.seed)
        shuffle = torch.Generator().manual_seed(trial.seed)
        model = self.build(p, splits).to(trial.device)
        optimizer = make_optimizer(p, model.parameters())
        epochs, batch_size, patience = int(p["epochs"]), int(p["batch_size"]), int(p["patience"])
        schedule = make_schedule(p["schedule"], optimizer, epochs)
        n = len(splits.y_train)
        best: dict[str, float] = {}
        best_state: dict[str, Any] | None = None
        stale = 0
        if report is not None:  # the curve starts at the untrained model, near log(classes)
            train_loss, _ = evaluate(model, splits.x_train, splits.y_train)
            val_loss, val_accuracy = evaluate(model, splits.x_val, splits.y_val)
            report(0, train_loss=train_loss, val_loss=val_loss, val_accuracy=val_accuracy)
        for epoch in range(1, epochs + 1):
            model.train()
            order = torch.randperm(n, generator=shuffle).to(splits.x_train.device)
            total = torch.zeros((), device=splits.x_train.device)
            for start in range(0, n, batch_size):
                index = order[start : start + batch_size]
                loss = F.cross_entropy(model(splits.x_train[index]), splits.y_train[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.detach() * len(index)
            schedule.step()
            train_loss = total.item() / n
            val_loss, val_accuracy = evaluate(model, splits.x_val, splits.y_val)
            if report is not None:
                report(epoch, train_loss=train_loss, val_loss=val_loss, val_accuracy=val_accuracy)
            if math.isfinite(val_loss) and val_loss < best.get("val_loss", math.inf) - 1e-4:
                best = {
                    "val_loss": val_loss, "val_accuracy": val_accuracy, "train_loss": train_loss, "best_epoch": epoch,
                }
                best_state = copy.deepcopy(model.state_dict())
                stale = 0
            else:
                stale += 1
                if stale >= patience:
                    break
        if best_state is None:
            return model, {"val_loss": math.nan, "val_accuracy": 0.0, "train_loss": train_loss}
        model.load_state_dict(best_state)
        return model, {**best, "epochs": epoch}
