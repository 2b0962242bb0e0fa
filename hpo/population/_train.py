"""Training K members of one model as one stacked model (``torch.func``), each member still its
own trial: its own initialisation and shuffling (its seed), hyperparameters, reports, pruning
and early stopping."""

from __future__ import annotations

import copy
import json
import math
from collections import ChainMap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from hpo._trial import Outcome, Trial, ended_by, outcome_of, plain
from hpo.population._heap import keep_freed_memory
from hpo.population._optim import StackedOptimizer, StackedSchedule

MOMENTUM_OPTIMIZERS = ("sgd_momentum", "nesterov")
"""The optimizers that read ``momentum``."""
PER_MEMBER = ("lr", "weight_decay", "momentum", "dropout", "patience")
"""The hyperparameters members of one population may differ in. The others (batch size,
optimizer, schedule, epochs, model width...) change shapes or the loop: members share them."""

TRAINING_DEFAULTS: dict[str, Any] = {
    "lr": 1e-3, "weight_decay": 0.0, "dropout": 0.1, "batch_size": 64, "optimizer": "adamw", "momentum": 0.9,
    "schedule": "cosine", "epochs": 25, "patience": 5,
}
"""What a member's parameters leave out."""


@dataclass(frozen=True)
class Recipe:
    """What hpo needs to train a population of an objective's model: the objective's
    ``population(params, trial)`` returns it, and hpo trains the members together.

    Training is the built-in objectives' procedure: the untrained model reported at step 0,
    then per epoch (``epochs``) shuffled minibatches (``batch_size``) with the ``optimizer``
    (sgd, sgd_momentum, nesterov, adam, adamw, rmsprop, adagrad) and a per-epoch ``schedule``
    (constant, step, exponential, cosine); ``train_loss``, ``val_loss`` and ``val_accuracy``
    reported each epoch; stopped after ``patience`` epochs without a better ``val_loss``, the
    best epoch's metrics returned.

    Args:
        build: One member's model from its parameters (called under the member's seed, so each
            starts from its own initialisation). Its ``nn.Dropout`` layers take each member's
            own rate; batch norm is not supported (members would share running statistics).
        train: Inputs and targets to train on, on the trial's device.
        validation: Inputs and targets to report on, on the same device.
        loss: ``loss(outputs, targets)``, a mean over the batch.
        accuracy: Whether to report ``val_accuracy`` (outputs' argmax against the targets).
        defaults: Hyperparameters the members' parameters leave out (``TRAINING_DEFAULTS``).
    """

    build: Callable[[Mapping[str, Any]], nn.Module]
    train: tuple[Tensor, Tensor]
    validation: tuple[Tensor, Tensor]
    loss: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy
    accuracy: bool = True
    defaults: Mapping[str, Any] = field(default_factory=lambda: dict(TRAINING_DEFAULTS))


_SCORED_AT_ONCE = 8192
"""Examples times members a report scores at once: a whole training set at once made
activations of 40 MB and more (32 members), which the allocator maps afresh each time."""

ON_CPU = 32
"""Members of an automatic population on a CPU: where stacking stops paying for the MNIST-1D
MLP on two cores (bench/population.py)."""
ON_GPU_AT_MOST = 1024


def auto_size(recipe: Recipe, params: Mapping[str, Any], device: str) -> int:
    """How many members to train together on ``device``: 32 on a CPU; on a GPU as many as half
    its free memory holds (float32 weights, gradients and two optimizer states, and a batch's
    activations thrice over), at most 1024."""
    if not device.startswith("cuda"):
        return ON_CPU
    params = {**recipe.defaults, **params}
    model = recipe.build(params).to(device)
    outputs: list[int] = []
    hooks = [m.register_forward_hook(lambda m, i, o: outputs.append(o.numel())) for m in model.modules()]
    with torch.no_grad():
        model(recipe.train[0][: int(params["batch_size"])])
    for hook in hooks:
        hook.remove()
    weights = sum(p.numel() for p in model.parameters())
    per_member = 4 * (4 * weights + 3 * sum(outputs))
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    return max(1, min(ON_GPU_AT_MOST, int(0.5 * free / per_member)))


def group_key(params: Mapping[str, Any]) -> str:
    """Members with the same key train together."""
    return json.dumps({k: v for k, v in params.items() if k not in PER_MEMBER}, sort_keys=True, default=str)


class _MemberDropout(nn.Module):
    """Dropout whose rate is a buffer, so that stacked members each keep their own."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.register_buffer("p", torch.tensor(float(p)))

    def forward(self, x: Tensor) -> Tensor:  # one member's inputs, under vmap
        if not self.training:
            return x
        return _dropout(x, *_mask_rate(self.p), members=0)


def _mask_rate(p: Tensor) -> tuple[Tensor, Tensor]:
    """``_dropout``'s threshold and scale for rates ``p`` (one per member)."""
    dropped = torch.round(p.double() * 2**16).clamp(0, 2**16 - 1)  # of 2**16
    return (dropped - 2**15).to(torch.int16), 1 / (1 - dropped / 2**16).float()


def _dropout(x: Tensor, threshold: Tensor, scale: Tensor, *, members: int) -> Tensor:
    """Dropout of ``x`` (stacked members first where ``members`` is 1; one member's, under vmap,
    where 0), each member at its own rate, from 16 random bits an element: a quarter of the
    generator's draws of ``rand_like``, which took half an MLP population's step on a CPU.

    A member drops an element where its bits, as a signed 16-bit integer, are below
    ``threshold`` = round(p * 2**16) - 2**15, and scales the others by ``scale`` =
    1 / (1 - round(p * 2**16) / 2**16): its rate rounded to 2**-16, unbiased. Both ways of
    computing a population (stacked, vmap) draw the same bits, member by member."""
    per_member = x.flatten(start_dim=members)
    size = per_member.shape[-1]
    bits = torch.empty_like(per_member[..., : (size + 3) // 4], dtype=torch.int64).random_(-(2**63), None)
    kept = bits.view(torch.int16)[..., :size].reshape(x.shape) >= threshold
    return x * (kept * scale)


_ELEMENTWISE = (nn.ReLU, nn.GELU, nn.Tanh, nn.Sigmoid, nn.SiLU, nn.LeakyReLU, nn.ELU, nn.Identity)


def _chain(model: nn.Module) -> list[tuple[str, nn.Module]] | None:
    """The model's layers in order, where it is a chain of linear layers, member dropout and
    elementwise activations (an MLP): the population computes those with batched matrix
    products, bit for bit what ``vmap`` computes, with less overhead. None for any other model."""
    layers = list(model.named_children())
    if isinstance(model, nn.Sequential) and all(isinstance(m, (nn.Linear, _MemberDropout, *_ELEMENTWISE))
                                                for _, m in layers):
        return layers
    return None


def _with_member_dropout(model: nn.Module) -> nn.Module:
    for name, child in model.named_children():
        if isinstance(child, nn.Dropout):
            setattr(model, name, _MemberDropout(child.p))
        else:
            _with_member_dropout(child)
    return model


class _Population:
    """The members still training, stacked: parameters, buffers and optimizer state, one row each.

    All of a member's parameters are one row of ``flat`` (members x parameters); the model's
    tensors are views of it. So a training step takes one gradient and the optimizer updates
    every parameter of every member with a handful of elementwise kernels, not a handful per
    tensor (the same elementwise arithmetic: the same numbers). The gradient is taken with
    respect to the views and written into one kept buffer: taken with respect to ``flat``, each
    view's backward would make a zero tensor the size of ``flat`` and add them all up."""

    def __init__(self, recipe: Recipe, params: list[dict[str, Any]], trials: Sequence[Trial]) -> None:
        models = []
        for p, trial in zip(params, trials, strict=True):
            torch.manual_seed(trial.seed)  # the member's own initialisation, as when trained alone
            models.append(_with_member_dropout(recipe.build(p)).to(trial.device))
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in models[0].modules()):
            raise ValueError("population training does not support batch norm (members would share statistics)")
        self.base = copy.deepcopy(models[0]).to("meta")
        self.chain = _chain(self.base)
        stacked, self.buffers = stack_module_state(models)
        self._shapes = {name: tensor.shape[1:] for name, tensor in stacked.items()}
        self.flat = torch.cat([t.detach().reshape(len(models), -1) for t in stacked.values()], dim=1).requires_grad_()
        self._derive()
        device = recipe.train[0].device
        first = params[0]

        def rates(name: str) -> Tensor:
            return torch.tensor([float(p[name]) for p in params], device=device)

        optimizer = first["optimizer"]
        momentum = rates("momentum") if optimizer in MOMENTUM_OPTIMIZERS else torch.zeros(len(params), device=device)
        self.optimizer = StackedOptimizer(optimizer, [self.flat], lr=rates("lr"),
                                          weight_decay=rates("weight_decay"), momentum=momentum)
        self.schedule = StackedSchedule(first["schedule"], [p["lr"] for p in params], int(first["epochs"]))
        self.rows = list(range(len(params)))  # each row's member

    def _derive(self) -> None:
        """What follows from ``flat`` and the buffers: the parameters' views, the gradient's
        buffer and views, and each dropout layer's thresholds (made anew when members leave)."""
        self.params = self._views(self.flat)
        self.grad, self._grads = self._gradient_views()
        self._dropout = self._dropout_rates()

    def _views(self, flat: Tensor) -> dict[str, Tensor]:
        """Each parameter's stack, as a view of its columns of ``flat`` (or of a tensor shaped alike)."""
        views, start = {}, 0
        for name, shape in self._shapes.items():
            size = shape.numel()
            views[name] = flat[:, start : start + size].view(-1, *shape)
            start += size
        return views

    def _dropout_rates(self) -> dict[str, tuple[Tensor, Tensor]]:
        """Each member dropout layer's ``_dropout`` threshold and scale, one per member (row)."""
        return {name: tuple(t.view(-1, 1, 1) for t in _mask_rate(self.buffers[f"{name}.p"]))
                for name, layer in self.chain or () if isinstance(layer, _MemberDropout)}

    def step(self, loss: Tensor) -> None:
        """One optimizer step for every member, down ``loss`` (the sum of the members' losses)."""
        grads = torch.autograd.grad(loss, list(self.params.values()), materialize_grads=True)
        for view, grad in zip(self._grads, grads, strict=True):
            view.copy_(grad)  # one pass each, transposed or not
        self.optimizer.step([self.grad])

    def _gradient_views(self) -> tuple[Tensor, list[Tensor]]:
        """A buffer for ``flat``'s gradient, and each parameter's view of it."""
        grad = torch.empty_like(self.flat, requires_grad=False)
        return grad, list(self._views(grad).values())

    def outputs(self, x: Tensor, *, shared: bool) -> Tensor:
        """Every member's outputs for its own inputs (``shared``: the same inputs for all)."""
        if self.chain is not None and x.dim() == (2 if shared else 3):
            return self._chained(x.expand(len(self.rows), *x.shape) if shared else x)

        def forward(params: dict, buffers: dict, inputs: Tensor) -> Tensor:
            return functional_call(self.base, (params, buffers), (inputs,))

        return vmap(forward, in_dims=(0, 0, None if shared else 0), randomness="different")(
            self.params, self.buffers, x
        )

    def _chained(self, x: Tensor) -> Tensor:
        """``outputs`` of a chain (see ``_chain``), for inputs stacked members first."""
        for name, layer in self.chain or ():
            if isinstance(layer, nn.Linear):
                x = torch.matmul(x, self.params[f"{name}.weight"].transpose(1, 2))
                if f"{name}.bias" in self.params:  # added after the product, as vmap does (baddbmm rounds otherwise)
                    x = x + self.params[f"{name}.bias"].unsqueeze(1)
            elif isinstance(layer, _MemberDropout):
                if self.base.training:
                    x = _dropout(x, *self._dropout[name], members=1)
            else:
                x = layer(x)
        return x

    def keep(self, members: list[int]) -> None:
        """Drop the members that stopped: they neither compute nor update any more."""
        index = torch.tensor([self.rows.index(m) for m in members], device=self.flat.device)
        self.flat = self.flat.detach()[index].requires_grad_()
        self.buffers = {k: v[index] for k, v in self.buffers.items()}
        self._derive()
        self.optimizer.keep(index, [self.flat])
        self.rows = members


def train_population(recipe: Recipe, members: Sequence[tuple[Mapping[str, Any], Trial]], metric: str) -> list[Outcome]:
    """Train ``members`` (parameters and trial) together; each member's outcome, as
    ``run_objective`` would give it for the member trained alone."""
    trials = [trial for _, trial in members]
    params = [ChainMap(p, recipe.defaults) for p, _ in members]  # what a member reads is noted (ReadParams)
    if len({group_key({**recipe.defaults, **plain(p)}) for p, _ in members}) > 1:
        raise ValueError("members of one population must agree on everything but " + ", ".join(PER_MEMBER))
    try:
        results = _train(recipe, params, trials)
    except Exception as error:  # one failure (out of memory, say) is every member's
        return [ended_by(error, trial, metric) for trial in trials]
    return [ended_by(r, t, metric) if isinstance(r, Exception) else outcome_of(r, t, metric)
            for r, t in zip(results, trials, strict=True)]


def fit(recipe: Recipe, params: Mapping[str, Any], trial: Trial) -> dict[str, float]:
    """Train one trial by the recipe, as an objective's ``__call__``: its metrics, or
    ``TrialPruned`` when its trial stops it."""
    (result,) = _train(recipe, [ChainMap(params, recipe.defaults)], [trial])
    if isinstance(result, Exception):
        raise result
    return result


def _train(recipe: Recipe, params: list[Mapping[str, Any]], trials: list[Trial]) -> list[Any]:
    """Each member's result (the best epoch's metrics) or the ``TrialPruned`` that stopped it."""
    (x_train, y_train), (x_val, y_val) = recipe.train, recipe.validation
    if x_train.device.type == "cpu":
        keep_freed_memory()
    population = _Population(recipe, params, trials)
    shuffles = [torch.Generator().manual_seed(trial.seed) for trial in trials]
    n, batch_size, epochs = len(y_train), int(params[0]["batch_size"]), int(params[0]["epochs"])
    results: list[Any] = [None] * len(trials)
    best: list[dict[str, float]] = [{} for _ in trials]
    stale = [0] * len(trials)
    last_train = [math.nan] * len(trials)

    def score(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Each member's mean loss and accuracy on ``(x, y)``, a few examples at a time."""
        rows = max(batch_size, _SCORED_AT_ONCE // len(population.rows))
        losses = correct = torch.zeros(len(population.rows), device=y.device)
        with torch.no_grad():
            for start in range(0, len(y), rows):
                xs, ys = x[start : start + rows], y[start : start + rows]
                outputs = population.outputs(xs, shared=True)
                losses = losses + _losses(recipe.loss, outputs, ys.expand(len(outputs), *ys.shape)) * len(ys)
                correct = correct + (outputs.argmax(dim=-1) == ys).sum(dim=-1)
        return losses / len(y), correct / len(y)

    def report(step: int, train_loss: Tensor) -> None:
        """Each active member reports; one that its trial stops leaves the population."""
        population.base.eval()
        val_loss, val_accuracy = score(x_val, y_val)
        values = list(zip(population.rows, train_loss.tolist(), val_loss.tolist(), val_accuracy.tolist(),
                          strict=True))
        # every member's report of the step is in before any is judged: members judge each other
        for member, train, loss, accuracy in values:
            metrics = {"train_loss": train, "val_loss": loss} | ({"val_accuracy": accuracy} if recipe.accuracy else {})
            last_train[member] = train
            trials[member].record(step, metrics)
        for member, _, loss, _ in values:
            if (pruned := trials[member].verdict()) is not None:
                results[member] = pruned
                continue
            metrics = trials[member].history[-1][1]
            if step == 0:
                continue
            if math.isfinite(loss) and loss < best[member].get("val_loss", math.inf) - 1e-4:
                best[member] = {**metrics, "best_epoch": step}
                stale[member] = 0
            else:
                stale[member] += 1
                if stale[member] >= int(params[member]["patience"]):
                    results[member] = _result(best[member], last_train[member], step)

    population.base.eval()
    report(0, score(x_train, y_train)[0])
    for epoch in range(1, epochs + 1):
        active = [m for m in population.rows if results[m] is None]
        if not active:
            break
        if active != population.rows:
            population.keep(active)
        population.base.train()
        orders = torch.stack([torch.randperm(n, generator=shuffles[m]) for m in active]).to(x_train.device)
        total = torch.zeros(len(active), device=x_train.device)
        for start in range(0, n, batch_size):
            index = orders[:, start : start + batch_size]
            losses = _losses(recipe.loss, population.outputs(x_train[index], shared=False), y_train[index])
            population.step(losses.sum())
            total += losses.detach() * index.shape[1]
        population.schedule.step()
        rates = population.schedule.rates()
        population.optimizer.lr = torch.tensor([rates[m] for m in active], device=x_train.device)
        report(epoch, total / n)
    for member in population.rows:
        if results[member] is None:
            results[member] = _result(best[member], last_train[member], epochs)
    return results


def _losses(loss: Callable[[Tensor, Tensor], Tensor], outputs: Tensor, targets: Tensor) -> Tensor:
    """Each member's ``loss`` of its outputs (members first). Cross-entropy, the default, is taken
    for all members in one call (through ``vmap`` it cost about as much as a step's matrix
    products), with the classes as the middle dimension: torch's CPU kernel works along the
    batch there, and along ten classes took four times as long (42 against 175 us, 32 members)."""
    if loss is F.cross_entropy and outputs.dim() == 3:
        return F.cross_entropy(outputs.transpose(1, 2), targets, reduction="none").mean(1)
    return vmap(loss)(outputs, targets)


def _result(best: dict[str, float], train_loss: float, epochs: int) -> dict[str, float]:
    """What the built-in objectives return: the best epoch's metrics, or NaN if none improved."""
    if not best:
        return {"val_loss": math.nan, "val_accuracy": 0.0, "train_loss": train_loss}
    return {**best, "epochs": epochs}
