"""The seven optimizers and four schedules of the built-in objectives, on stacked parameters
(one row per member), each member with its own optimizer, schedule, learning rate, weight decay
and momentum.

The update of each optimizer is torch.optim's own (single-tensor implementation, default
settings), written once for a stack of members: a member trained in a population follows the
same steps as the member trained alone with ``torch.optim``, to rounding.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from hpo._errors import unknown

OPTIMIZERS = ("sgd", "sgd_momentum", "nesterov", "adam", "adamw", "rmsprop", "adagrad")
SCHEDULES = ("constant", "step", "exponential", "cosine")
_BETAS, _ADAM_EPS = (0.9, 0.999), 1e-8
_RMSPROP_ALPHA, _RMSPROP_EPS = 0.99, 1e-8
_ADAGRAD_EPS = 1e-10


class StackedOptimizer:
    """Every member's own update rule, hyperparameters and state, on stacked parameters (one row
    per member). Rows come sorted by rule (``rules``), so that each rule updates one contiguous
    block of rows, a view, with one set of kernels however many members use it. Each row counts
    its own steps (a member that joined later is at its own first step).

    ``regroup`` follows the population as members leave and join: a new row starts with fresh
    state, as a trial alone starts with a new optimizer."""

    def __init__(self, rules: Sequence[str], *, lr: Tensor, weight_decay: Tensor, momentum: Tensor) -> None:
        for name in rules:
            if name not in OPTIMIZERS:
                raise ValueError(unknown("optimizer", name, OPTIMIZERS))
        if list(rules) != sorted(rules, key=OPTIMIZERS.index):
            raise ValueError("rows must come sorted by rule")
        self.rules = list(rules)
        self.blocks = _blocks(self.rules)
        """Each rule in use and its rows (found once per membership, not at each step)."""
        self.lr, self.weight_decay, self.momentum = lr, weight_decay, momentum
        self.steps = [0] * len(rules)
        self.state: dict[str, Tensor] = {}
        """Each state tensor for every row (rows x parameters), made zero at its first use."""

    def step(self, param: Tensor, grad: Tensor) -> None:
        """One update of every row of ``param`` (rows x parameters) down ``grad``."""
        self.steps = [steps + 1 for steps in self.steps]
        with torch.no_grad():
            for rule, rows in self.blocks:
                state = _Rows(self.state, param, rows)
                lr, wd, momentum = (_per_member(h[rows], param) for h in (self.lr, self.weight_decay, self.momentum))
                getattr(self, f"_{rule}")(param[rows], grad[rows], state, lr, wd, momentum, self.steps[rows])

    def regroup(self, rows: Tensor, rules: Sequence[str], *, lr: Tensor, weight_decay: Tensor,
                momentum: Tensor) -> None:
        """The rows ``rows`` (indices into the current ones, -1 for a new member) with their
        rules and hyperparameters: kept rows keep their state and step counts."""
        kept = rows >= 0
        index = rows.clamp(min=0)
        self.state = {name: torch.where(_per_member(kept, value), value[index], 0.0)
                      for name, value in self.state.items()}
        self.steps = [self.steps[i] if i >= 0 else 0 for i in rows.tolist()]
        self.rules = list(rules)
        self.blocks = _blocks(self.rules)
        self.lr, self.weight_decay, self.momentum = lr, weight_decay, momentum

    # Each: torch.optim's single-tensor update, with per-member hyperparameters.
    # A momentum buffer starts at zero: its first update, 0 * momentum + grad, is torch's clone of
    # the gradient, bit for bit, and a row that joins later starts the same way.
    def _sgd(self, param: Tensor, grad: Tensor, state: _Rows, lr: Tensor, wd: Tensor, momentum: Tensor,
             steps: list[int]) -> None:
        param.sub_(lr * (grad + wd * param))

    def _sgd_momentum(self, param: Tensor, grad: Tensor, state: _Rows, lr: Tensor, wd: Tensor, momentum: Tensor,
                      steps: list[int], nesterov: bool = False) -> None:
        grad = grad + wd * param
        (buffer,) = state.get("momentum_buffer")
        buffer.mul_(momentum).add_(grad)
        param.sub_(lr * (grad + momentum * buffer if nesterov else buffer))

    def _nesterov(self, param: Tensor, grad: Tensor, state: _Rows, lr: Tensor, wd: Tensor, momentum: Tensor,
                  steps: list[int]) -> None:
        self._sgd_momentum(param, grad, state, lr, wd, momentum, steps, nesterov=True)

    def _adam(self, param: Tensor, grad: Tensor, state: _Rows, lr: Tensor, wd: Tensor, momentum: Tensor,
              steps: list[int], decoupled: bool = False) -> None:
        if decoupled:
            param.mul_(1 - lr * wd)
        else:
            grad = grad + wd * param
        beta1, beta2 = _BETAS
        exp_avg, exp_avg_sq, update = state.get("exp_avg", "exp_avg_sq", "update")  # update: a kept buffer
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        if len(set(steps)) == 1:  # torch's scalars, where every row is at the same step
            bias1: float | Tensor = 1 - beta1 ** steps[0]
            bias2: float | Tensor = (1 - beta2 ** steps[0]) ** 0.5
        else:
            bias1, bias2 = (_per_member(torch.tensor([f(s) for s in steps], device=param.device), param)
                            for f in (lambda s: 1 - beta1**s, lambda s: (1 - beta2**s) ** 0.5))
        step_size = lr / bias1
        torch.sqrt(exp_avg_sq, out=update).div_(bias2).add_(_ADAM_EPS)  # the denominator,
        torch.div(exp_avg, update, out=update)  # then the step, in the same buffer
        param.sub_(update.mul_(step_size))

    def _adamw(self, param: Tensor, grad: Tensor, state: _Rows, lr: Tensor, wd: Tensor, momentum: Tensor,
               steps: list[int]) -> None:
        self._adam(param, grad, state, lr, wd, momentum, steps, decoupled=True)

    def _rmsprop(self, param: Tensor, grad: Tensor, state: _Rows, lr: Tensor, wd: Tensor, momentum: Tensor,
                 steps: list[int]) -> None:
        grad = grad + wd * param
        (square_avg,) = state.get("square_avg")
        square_avg.mul_(_RMSPROP_ALPHA).addcmul_(grad, grad, value=1 - _RMSPROP_ALPHA)
        param.sub_(lr * grad / square_avg.sqrt().add_(_RMSPROP_EPS))

    def _adagrad(self, param: Tensor, grad: Tensor, state: _Rows, lr: Tensor, wd: Tensor, momentum: Tensor,
                 steps: list[int]) -> None:
        grad = grad + wd * param
        (state_sum,) = state.get("sum")
        state_sum.addcmul_(grad, grad, value=1)
        param.sub_(lr * grad / state_sum.sqrt().add_(_ADAGRAD_EPS))


def _blocks(rules: Sequence[str]) -> list[tuple[str, slice]]:
    """Each rule of rows sorted by rule, and the slice of rows that use it."""
    blocks, start = [], 0
    for rule, rows in itertools.groupby(rules):
        count = len(list(rows))
        blocks.append((rule, slice(start, start + count)))
        start += count
    return blocks


class _Rows:
    """A rule's rows of the optimizer's state tensors, each made zero for every row at its first
    use (and only then: a new zero tensor the size of every member's parameters at each step
    costs about as much as the update)."""

    def __init__(self, state: dict[str, Tensor], like: Tensor, rows: slice) -> None:
        self.state, self.like, self.rows = state, like, rows

    def get(self, *names: str) -> list[Tensor]:
        for name in names:
            if name not in self.state:
                self.state[name] = torch.zeros_like(self.like)
        return [self.state[name][self.rows] for name in names]


def _per_member(values: Tensor, like: Tensor) -> Tensor:
    """One value per member, shaped to broadcast over a stacked tensor (members first)."""
    return values.reshape(-1, *([1] * (like.dim() - 1)))


class MemberSchedule:
    """One member's learning rate, epoch by epoch, as torch's scheduler sets it (on a stand-in
    optimizer): each member follows its own schedule, base rate and epochs."""

    def __init__(self, name: str, lr: float, epochs: int) -> None:
        if name not in SCHEDULES:
            raise ValueError(f"unknown schedule {name!r} ({', '.join(SCHEDULES)})")
        self._optimizer = torch.optim.SGD([torch.zeros(1)], lr=float(lr))
        self._schedule = make_schedule(name, self._optimizer, epochs)

    @property
    def rate(self) -> float:
        return float(self._optimizer.param_groups[0]["lr"])

    def step(self) -> None:
        self._optimizer.step()  # nothing to update (no gradients); torch expects it before the schedule's
        self._schedule.step()


def make_schedule(name: str, optimizer: torch.optim.Optimizer, epochs: int) -> Any:
    """A per-epoch learning-rate schedule: constant, step, exponential or cosine."""
    if name == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)
    if name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, epochs // 3), gamma=0.1)
    if name == "exponential":
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.9)
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    raise ValueError(f"unknown schedule {name!r} ({', '.join(SCHEDULES)})")
