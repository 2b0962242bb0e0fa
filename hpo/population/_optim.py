"""The seven optimizers and four schedules of the built-in objectives, on stacked parameters
(one row per member), each member with its own learning rate, weight decay and momentum.

The update of each optimizer is torch.optim's own (single-tensor implementation, default
settings), written once for a stack of members: a member trained in a population follows the
same steps as the member trained alone with ``torch.optim``, to rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

OPTIMIZERS = ("sgd", "sgd_momentum", "nesterov", "adam", "adamw", "rmsprop", "adagrad")
SCHEDULES = ("constant", "step", "exponential", "cosine")
_BETAS, _ADAM_EPS = (0.9, 0.999), 1e-8
_RMSPROP_ALPHA, _RMSPROP_EPS = 0.99, 1e-8
_ADAGRAD_EPS = 1e-10


class StackedOptimizer:
    """``name``'s update for every member at once; hyperparameters are tensors of one value per
    member. ``keep`` drops members that stopped, state included."""

    def __init__(self, name: str, params: Sequence[Tensor], *, lr: Tensor, weight_decay: Tensor,
                 momentum: Tensor) -> None:
        if name not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {name!r} (choose from {', '.join(OPTIMIZERS)})")
        self.name = name
        self.params = list(params)
        self.lr, self.weight_decay, self.momentum = lr, weight_decay, momentum
        self.steps = 0
        self.state: list[dict[str, Tensor]] = [{} for _ in self.params]

    def step(self, grads: Sequence[Tensor]) -> None:
        self.steps += 1
        with torch.no_grad():
            for param, grad, state in zip(self.params, grads, self.state, strict=True):
                lr, wd, momentum = (_per_member(h, param) for h in (self.lr, self.weight_decay, self.momentum))
                getattr(self, f"_{self.name}")(param, grad, state, lr, wd, momentum)

    def keep(self, rows: Tensor, params: Sequence[Tensor]) -> None:
        """Keep the members ``rows`` (indices), with ``params`` the parameters compacted alike."""
        self.params = list(params)
        self.lr, self.weight_decay, self.momentum = self.lr[rows], self.weight_decay[rows], self.momentum[rows]
        self.state = [{key: value[rows] for key, value in state.items()} for state in self.state]

    # Each: torch.optim's single-tensor update, with per-member hyperparameters.
    def _sgd(self, param: Tensor, grad: Tensor, state: dict, lr: Tensor, wd: Tensor, momentum: Tensor) -> None:
        param.sub_(lr * (grad + wd * param))

    def _sgd_momentum(self, param: Tensor, grad: Tensor, state: dict, lr: Tensor, wd: Tensor, momentum: Tensor,
                      nesterov: bool = False) -> None:
        grad = grad + wd * param
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = grad.clone()
        else:
            state["momentum_buffer"].mul_(momentum).add_(grad)
        buffer = state["momentum_buffer"]
        param.sub_(lr * (grad + momentum * buffer if nesterov else buffer))

    def _nesterov(self, param: Tensor, grad: Tensor, state: dict, lr: Tensor, wd: Tensor, momentum: Tensor) -> None:
        self._sgd_momentum(param, grad, state, lr, wd, momentum, nesterov=True)

    def _adam(self, param: Tensor, grad: Tensor, state: dict, lr: Tensor, wd: Tensor, momentum: Tensor,
              decoupled: bool = False) -> None:
        if decoupled:
            param.mul_(1 - lr * wd)
        else:
            grad = grad + wd * param
        beta1, beta2 = _BETAS
        exp_avg, exp_avg_sq = _zeros_once(state, param, "exp_avg", "exp_avg_sq")
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step_size = lr / (1 - beta1**self.steps)
        (update,) = _zeros_once(state, param, "update")  # a buffer kept: a new one each step costs page faults
        torch.sqrt(exp_avg_sq, out=update).div_((1 - beta2**self.steps) ** 0.5).add_(_ADAM_EPS)  # the denominator,
        torch.div(exp_avg, update, out=update)  # then the step, in the same buffer
        param.sub_(update.mul_(step_size))

    def _adamw(self, param: Tensor, grad: Tensor, state: dict, lr: Tensor, wd: Tensor, momentum: Tensor) -> None:
        self._adam(param, grad, state, lr, wd, momentum, decoupled=True)

    def _rmsprop(self, param: Tensor, grad: Tensor, state: dict, lr: Tensor, wd: Tensor, momentum: Tensor) -> None:
        grad = grad + wd * param
        (square_avg,) = _zeros_once(state, param, "square_avg")
        square_avg.mul_(_RMSPROP_ALPHA).addcmul_(grad, grad, value=1 - _RMSPROP_ALPHA)
        param.sub_(lr * grad / square_avg.sqrt().add_(_RMSPROP_EPS))

    def _adagrad(self, param: Tensor, grad: Tensor, state: dict, lr: Tensor, wd: Tensor, momentum: Tensor) -> None:
        grad = grad + wd * param
        (state_sum,) = _zeros_once(state, param, "sum")
        state_sum.addcmul_(grad, grad, value=1)
        param.sub_(lr * grad / state_sum.sqrt().add_(_ADAGRAD_EPS))


def _zeros_once(state: dict[str, Tensor], like: Tensor, *names: str) -> list[Tensor]:
    """The state tensors ``names``, made zero at the first step (and only then: a new zero tensor
    the size of every member's parameters at each step costs about as much as the update)."""
    for name in names:
        if name not in state:
            state[name] = torch.zeros_like(like)
    return [state[name] for name in names]


def _per_member(values: Tensor, like: Tensor) -> Tensor:
    """One value per member, shaped to broadcast over a stacked tensor (members first)."""
    return values.reshape(-1, *([1] * (like.dim() - 1)))


class StackedSchedule:
    """Each member's learning rate, epoch by epoch, as torch's scheduler sets it: one param
    group per member on a stand-in optimizer, so every member follows its own base rate exactly."""

    def __init__(self, name: str, base_lrs: Sequence[float], epochs: int) -> None:
        if name not in SCHEDULES:
            raise ValueError(f"unknown schedule {name!r} ({', '.join(SCHEDULES)})")
        groups: list[dict[str, Any]] = [{"params": [torch.zeros(1)], "lr": float(lr)} for lr in base_lrs]
        self._optimizer = torch.optim.SGD(groups)
        self._schedule = make_schedule(name, self._optimizer, epochs)

    def rates(self) -> list[float]:
        return [group["lr"] for group in self._optimizer.param_groups]

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
