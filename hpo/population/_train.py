"""Training K members of one model as one stacked model (``torch.func``), each member still its
own trial: its own initialisation and shuffling (its seed), hyperparameters, reports, pruning
and early stopping."""

from __future__ import annotations

import copy
import json
import math
import time
from collections import ChainMap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from hpo.plan import PER_MEMBER, TRAINING_DEFAULTS
from hpo.population._heap import keep_freed_memory
from hpo.population._optim import OPTIMIZERS, SCHEDULES, MemberSchedule, StackedOptimizer
from hpo.trial import TIMEOUT, Outcome, Trial, TrialState, ended_by, outcome_of

MOMENTUM_OPTIMIZERS = ("sgd_momentum", "nesterov")
"""The optimizers that read ``momentum``."""

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
            own rate; batch norm layers keep each member's own running statistics.
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

    def __post_init__(self) -> None:
        for name in ("train", "validation"):
            pair = getattr(self, name)
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                raise TypeError(f"Recipe: {name} must be a pair (inputs, targets), got {type(pair).__name__}")
            for part, value in zip(("inputs", "targets"), pair, strict=True):
                if not isinstance(value, Tensor):
                    kind = type(value).__module__.split(".")[0] + "." + type(value).__name__
                    raise TypeError(f"Recipe: {name} {part} must be a torch.Tensor, got {kind} (torch.as_tensor "
                                    "makes one; inputs as float32, class targets as int64)")
            if len(pair[0]) != len(pair[1]):
                raise ValueError(f"Recipe: {name} has {len(pair[0])} inputs but {len(pair[1])} targets")
        devices = {str(t.device) for t in (*self.train, *self.validation)}
        if len(devices) > 1:
            raise ValueError(f"Recipe: train and validation must be on one device (the trial's), got "
                             f"{', '.join(sorted(devices))}")


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


def unstackable(recipe: Recipe, fixed: Mapping[str, Any], searched: Mapping[str, Any]) -> str | None:
    """Why the members of this recipe's model cannot train as one population, in words naming
    the layer or the value (``searched``: the space's parameters, by name); None where they can."""
    offered = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES}
    for name, choices in offered.items():
        values = [fixed.get(name, recipe.defaults.get(name)), *getattr(searched.get(name), "choices", [])]
        for value in values:
            if value is not None and value not in choices:
                return f"{name} {value!r} is not one population training offers ({', '.join(choices)})"
    model = recipe.build({**recipe.defaults, **fixed})
    for name, layer in model.named_modules():
        if isinstance(layer, nn.RNNBase):
            return f"its {type(layer).__name__} layer {name!r} does not train under torch.func's vmap"
    return None


def group_key(params: Mapping[str, Any]) -> str:
    """Members with the same key train together."""
    return json.dumps({k: v for k, v in params.items() if k not in PER_MEMBER}, sort_keys=True, default=str)


class _MemberDropout(nn.Module):
    """Dropout whose rate and random stream are buffers, so that stacked members each keep their
    own: ``key`` is the member's draw for this layer at this step (``_Population.next_step``)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.register_buffer("p", torch.tensor(float(p)))
        self.register_buffer("key", torch.tensor(0, dtype=torch.int64))

    def forward(self, x: Tensor) -> Tensor:  # one member's inputs, under vmap
        if not self.training:
            return x
        return _dropout(x, *_mask_rate(self.p), self.key, members=0)


_GOLDEN = -7046029254386353131
"""splitmix64's increment, 0x9E3779B97F4A7C15, as a signed 64-bit integer."""


def _mix64(z: Tensor) -> Tensor:
    """splitmix64's finaliser, elementwise on int64 (wrapping products; logical shifts by masking)."""
    z = (z ^ ((z >> 30) & ((1 << 34) - 1))) * -4658895280553007687  # 0xBF58476D1CE4E5B9
    z = (z ^ ((z >> 27) & ((1 << 37) - 1))) * -7723592293110705685  # 0x94D049BB133111EB
    return z ^ ((z >> 31) & ((1 << 33) - 1))


def _mask_rate(p: Tensor) -> tuple[Tensor, Tensor]:
    """``_dropout``'s threshold and scale for rates ``p`` (one per member)."""
    dropped = torch.round(p.double() * 2**16).clamp(0, 2**16 - 1)  # of 2**16
    return (dropped - 2**15).to(torch.int16), 1 / (1 - dropped / 2**16).float()


def _dropout(x: Tensor, threshold: Tensor, scale: Tensor, key: Tensor, *, members: int) -> Tensor:
    """Dropout of ``x`` (stacked members first where ``members`` is 1; one member's, under vmap,
    where 0), each member at its own rate, from 16 random bits an element.

    The bits are splitmix64's sequence from each member's ``key`` (one int64 a member: its own
    stream at its own step and layer), so a member's masks depend on its seed and its steps
    alone, not on which population it trains in, in which row, beside whom: a member drops what
    it drops trained alone. A member drops an element where its bits, as a signed 16-bit
    integer, are below ``threshold`` = round(p * 2**16) - 2**15, and scales the others by
    ``scale`` = 1 / (1 - round(p * 2**16) / 2**16): its rate rounded to 2**-16, unbiased."""
    size = x.flatten(start_dim=members).shape[-1]
    counter = torch.arange(1, (size + 3) // 4 + 1, dtype=torch.int64, device=x.device) * _GOLDEN
    bits = _mix64(key.unsqueeze(-1) + counter)
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


@dataclass(eq=False)
class _Member:
    """One member: its trial, and where it stands in its own training (its epoch, best epoch,
    patience, schedule and order of the data; a member that joined later is at its own epoch)."""

    params: Mapping[str, Any]
    trial: Trial
    schedule: MemberSchedule
    shuffle: torch.Generator
    patience: int
    """Epochs without a better ``val_loss`` before it stops: read as it joins, so that a member
    that never runs out of patience still reads it (an unread parameter is warned of)."""
    epoch: int = 0
    best: dict[str, float] = field(default_factory=dict)
    stale: int = 0
    last_train: float = math.nan
    result: Any = None
    """How it ended, once it has: its metrics, the ``TrialPruned`` that stopped it, an ``Outcome``."""
    joined: float = field(default_factory=time.monotonic)

    @property
    def rule(self) -> str:
        return str(self.params["optimizer"])


def _member(recipe: Recipe, params: Mapping[str, Any], trial: Trial) -> _Member:
    read = ChainMap(params, recipe.defaults)  # what a member reads is noted (ReadParams)
    schedule = MemberSchedule(read["schedule"], float(read["lr"]), int(read["epochs"]))
    return _Member(read, trial, schedule, torch.Generator().manual_seed(trial.seed), int(read["patience"]))


def _structure(model: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    """What members must share to stack: their tensors' names and shapes."""
    return [(name, tuple(t.shape)) for name, t in [*model.named_parameters(), *model.named_buffers()]]


class _Population:
    """The members training together, stacked: parameters, buffers and optimizer state, one row
    each, rows sorted by the members' update rules.

    All of a member's parameters are one row of ``flat`` (members x parameters); the model's
    tensors are views of it. So a training step takes one gradient and the optimizer updates
    every parameter of every member with a handful of elementwise kernels per rule in use, not a
    handful per tensor (the same elementwise arithmetic: the same numbers). The gradient is taken
    with respect to the views and written into one kept buffer: taken with respect to ``flat``,
    each view's backward would make a zero tensor the size of ``flat`` and add them all up."""

    def __init__(self, recipe: Recipe, members: list[_Member]) -> None:
        members = sorted(members, key=lambda m: OPTIMIZERS.index(m.rule))
        models = []
        for member in members:
            torch.manual_seed(member.trial.seed)  # the member's own initialisation, as when trained alone
            models.append(_with_member_dropout(recipe.build(member.params)).to(member.trial.device))
        self.structure = _structure(models[0])
        if any(_structure(model) != self.structure for model in models[1:]):
            raise ValueError("members of one population must build models of one shape")
        self.base = copy.deepcopy(models[0]).to("meta")
        self.chain = _chain(self.base)
        self._dropout_layers = [name for name, layer in self.base.named_modules() if isinstance(layer, _MemberDropout)]
        stacked, self.buffers = stack_module_state(models)
        self._shapes = {name: tensor.shape[1:] for name, tensor in stacked.items()}
        self.flat = torch.cat([t.detach().reshape(len(models), -1) for t in stacked.values()], dim=1).requires_grad_()
        self.rows = members
        self.steps = torch.zeros(len(members), dtype=torch.int64, device=self.flat.device)
        """The training steps each row has taken: where its dropout stream stands."""
        self.optimizer = StackedOptimizer([m.rule for m in members], **self._rates())
        self._derive()

    def _rates(self) -> dict[str, Tensor]:
        """Each row's learning rate (its schedule's, now), weight decay and momentum."""

        def per_row(values: list[float]) -> Tensor:
            return torch.tensor(values, device=self.flat.device)

        return {"lr": per_row([m.schedule.rate for m in self.rows]),
                "weight_decay": per_row([float(m.params["weight_decay"]) for m in self.rows]),
                "momentum": per_row([float(m.params["momentum"]) if m.rule in MOMENTUM_OPTIMIZERS else 0.0
                                     for m in self.rows])}

    def epoch_done(self) -> None:
        """Every row finished an epoch: its schedule moves on."""
        for member in self.rows:
            member.epoch += 1
            member.schedule.step()
        self.optimizer.lr = self._rates()["lr"]

    def regroup(self, members: list[_Member], joining: _Population | None = None) -> None:
        """Train ``members`` from now on: rows of this population (the others left) and of
        ``joining`` (new members, fresh optimizer state), sorted by rule again."""
        where = {id(m): (self, i) for i, m in enumerate(self.rows)}
        if joining is not None:
            where |= {id(m): (joining, i) for i, m in enumerate(joining.rows)}
        if joining is not None and joining.structure != self.structure:
            raise ValueError("members of one population must build models of one shape")
        members = sorted(members, key=lambda m: OPTIMIZERS.index(m.rule))
        rows = [where[id(m)] for m in members]
        self.flat = torch.stack([pop.flat.detach()[i] for pop, i in rows]).requires_grad_()
        self.buffers = {name: torch.stack([pop.buffers[name][i] for pop, i in rows]) for name in self.buffers}
        kept = torch.tensor([i if pop is self else -1 for pop, i in rows], device=self.flat.device)
        self.steps = torch.stack([pop.steps[i] for pop, i in rows])
        self.rows = members
        self.optimizer.regroup(kept, [m.rule for m in members], **self._rates())
        self._derive()

    def _derive(self) -> None:
        """What follows from ``flat`` and the buffers: the parameters' views, the gradient's
        buffer and views, and each dropout layer's thresholds (made anew when members change)."""
        self.params = self._views(self.flat)
        self.grad, self._grads = self._gradient_views()
        self._dropout = self._dropout_rates()
        seeds = torch.tensor([m.trial.seed for m in self.rows], dtype=torch.int64, device=self.flat.device)
        self._streams = _mix64(seeds)

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

    def next_step(self) -> None:
        """Before a training step: each dropout layer's key for it, one per row, the row's own
        stream at the row's own step (``_dropout``)."""
        draws = self.steps * len(self._dropout_layers)
        for index, layer in enumerate(self._dropout_layers):
            self.buffers[f"{layer}.key"] = _mix64(self._streams + (draws + index) * _GOLDEN)
        self.steps += 1

    def step(self, loss: Tensor) -> None:
        """One optimizer step for every member, down ``loss`` (the sum of the members' losses)."""
        grads = torch.autograd.grad(loss, list(self.params.values()), materialize_grads=True)
        for view, grad in zip(self._grads, grads, strict=True):
            view.copy_(grad)  # one pass each, transposed or not
        self.optimizer.step(self.flat, self.grad)

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

        if len(self.rows) == 1:  # a trial alone (``fit``): its model as it is, whatever vmap cannot batch
            one = ({k: v[0] for k, v in self.params.items()}, {k: v[0] for k, v in self.buffers.items()})
            return forward(*one, x if shared else x[0]).unsqueeze(0)

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
                    x = _dropout(x, *self._dropout[name], self.buffers[f"{name}.key"], members=1)
            else:
                x = layer(x)
        return x


Member = tuple[Mapping[str, Any], Trial]
"""A member as the caller gives it: its parameters and its trial."""


def train_population(recipe: Recipe, members: Sequence[Member], metric: str, *,
                     refill: Callable[[int], Sequence[Member]] | None = None,
                     ended: Callable[[list[tuple[Trial, Outcome]]], None] | None = None,
                     time_limit_s: float | None = None) -> list[Outcome]:
    """Train ``members`` (parameters and trial) together; each member's outcome, as
    ``run_objective`` would give it for the member trained alone, in the order they joined.

    Members may differ in anything that leaves their models' shapes alone (optimizer, schedule,
    learning rate, weight decay, momentum, dropout, epochs, patience); they share the batch size.
    ``refill(count)``, where given, is asked at each epoch boundary for members to take the rows
    of those that stopped (up to ``count``, of the same shapes; none once the budget is out),
    each trained from its own first epoch; ``ended([(trial, outcome), ...])`` hears the members
    that stopped at each epoch's end, together (their store writes go together). ``time_limit_s``
    ends a member that has trained longer (at an epoch boundary)."""
    outcomes: dict[int, Outcome] = {}
    joined: list[Trial] = []

    def end(stopped: list[_Member]) -> None:
        for member in stopped:
            outcomes[id(member.trial)] = _outcome(member.result, member.trial, metric)
        if ended is not None:
            ended([(member.trial, outcomes[id(member.trial)]) for member in stopped])

    def join(given: Sequence[Member]) -> list[_Member]:
        joined.extend(trial for _, trial in given)
        return [_member(recipe, params, trial) for params, trial in given]

    training = _Training(recipe, end, time_limit_s)
    try:
        training.run(join(members), None if refill is None else lambda count: join(refill(count)))
    except Exception as error:  # one failure (out of memory, say) is every member's still training
        failed = [trial for trial in joined if id(trial) not in outcomes]
        for trial in failed:
            outcomes[id(trial)] = ended_by(error, trial, metric)
        if ended is not None and failed:
            ended([(trial, outcomes[id(trial)]) for trial in failed])
    return [outcomes[id(trial)] for trial in joined]


def fit(recipe: Recipe, params: Mapping[str, Any], trial: Trial) -> dict[str, float]:
    """Train one trial by the recipe, as an objective's ``__call__``: its metrics, or
    ``TrialPruned`` when its trial stops it."""
    results: list[Any] = []
    _Training(recipe, lambda stopped: results.extend(m.result for m in stopped)).run([_member(recipe, params, trial)])
    (result,) = results
    if isinstance(result, Exception):
        raise result
    return result


def _outcome(result: Any, trial: Trial, metric: str) -> Outcome:
    if isinstance(result, Outcome):
        return result
    return ended_by(result, trial, metric) if isinstance(result, Exception) else outcome_of(result, trial, metric)


class _Training:
    """The built-in objectives' procedure for a population whose members come and go: the
    untrained model reported at step 0, then epochs of shuffled minibatches, each member
    reporting at its own epoch, leaving when it stops, its rows taken at the epoch's end."""

    def __init__(self, recipe: Recipe, end: Callable[[list[_Member]], None], time_limit_s: float | None = None,
                 ) -> None:
        self.recipe = recipe
        self.end = end
        self.time_limit_s = time_limit_s

    def run(self, members: list[_Member], refill: Callable[[int], list[_Member]] | None = None) -> None:
        if self.recipe.train[0].device.type == "cpu":
            keep_freed_memory()
        batch_size = self.batch_size = int(members[0].params["batch_size"])
        if any(int(m.params["batch_size"]) != batch_size for m in members):
            raise ValueError("members of one population must share their batch_size")
        size = len(members)
        population = self._started(members)
        while True:
            for member in population.rows:
                if member.result is None and self.time_limit_s is not None and \
                        time.monotonic() - member.joined > self.time_limit_s:
                    member.result = Outcome(TrialState.FAILED, reason=TIMEOUT)
            if stopped := [m for m in population.rows if m.result is not None]:
                self.end(stopped)
            active = [m for m in population.rows if m.result is None]
            joining = None
            if refill is not None and len(active) < size:
                new = [m for m in refill(size - len(active)) if int(m.params["batch_size"]) == batch_size]
                joining = self._started(new) if new else None
                if joining is not None and (stopped := [m for m in joining.rows if m.result is not None]):
                    self.end(stopped)  # stopped at their untrained step
                active += [m for m in joining.rows if m.result is None] if joining is not None else []
            if not active:
                if joining is None:
                    return
                continue  # every newcomer stopped at once: ask for more
            if active != population.rows:
                population.regroup(active, joining)
            self._epoch(population, batch_size)

    def _started(self, members: list[_Member]) -> _Population:
        population = _Population(self.recipe, members)
        population.base.eval()
        self._report(population, self._score(population, *self.recipe.train)[0])
        return population

    def _epoch(self, population: _Population, batch_size: int) -> None:
        """One epoch of every row, then each member's report at its own epoch."""
        (x_train, y_train) = self.recipe.train
        n = len(y_train)
        population.base.train()
        orders = torch.stack([torch.randperm(n, generator=m.shuffle) for m in population.rows]).to(x_train.device)
        total = torch.zeros(len(population.rows), device=x_train.device)
        for start in range(0, n, batch_size):
            index = orders[:, start : start + batch_size]
            population.next_step()
            losses = _losses(self.recipe.loss, population.outputs(x_train[index], shared=False), y_train[index])
            population.step(losses.sum())
            total += losses.detach() * index.shape[1]
        population.epoch_done()
        self._report(population, total / n)
        for member in population.rows:
            if member.result is None and member.epoch >= int(member.params["epochs"]):
                member.result = _result(member.best, member.last_train, member.epoch)

    def _score(self, population: _Population, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Each member's mean loss and accuracy on ``(x, y)``, a few examples at a time."""
        rows = max(self.batch_size, _SCORED_AT_ONCE // len(population.rows))
        losses = correct = torch.zeros(len(population.rows), device=y.device)
        with torch.no_grad():
            for start in range(0, len(y), rows):
                xs, ys = x[start : start + rows], y[start : start + rows]
                outputs = population.outputs(xs, shared=True)
                losses = losses + _losses(self.recipe.loss, outputs, ys.expand(len(outputs), *ys.shape)) * len(ys)
                if self.recipe.accuracy:
                    correct = correct + (outputs.argmax(dim=-1) == ys).sum(dim=-1)
        return losses / len(y), correct / len(y)

    def _report(self, population: _Population, train_loss: Tensor) -> None:
        """Each member reports at its own epoch, every report of the step recorded before any
        is judged (members judge each other); one that its trial stops, or whose patience ran
        out, has its result."""
        population.base.eval()
        val_loss, val_accuracy = self._score(population, *self.recipe.validation)
        values = list(zip(population.rows, train_loss.tolist(), val_loss.tolist(), val_accuracy.tolist(),
                          strict=True))
        for member, train, loss, accuracy in values:
            metrics = {"train_loss": train, "val_loss": loss}
            member.last_train = train
            member.trial.record(member.epoch, metrics | ({"val_accuracy": accuracy} if self.recipe.accuracy else {}))
        for member, _, loss, _ in values:
            if (pruned := member.trial.verdict()) is not None:
                member.result = pruned
            elif member.epoch > 0:
                if math.isfinite(loss) and loss < member.best.get("val_loss", math.inf) - 1e-4:
                    member.best = {**member.trial.history[-1][1], "best_epoch": member.epoch}
                    member.stale = 0
                else:
                    member.stale += 1
                    if member.stale >= member.patience:
                        member.result = _result(member.best, member.last_train, member.epoch)


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
