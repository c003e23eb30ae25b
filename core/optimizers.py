"""Optimizers and learning-rate schedules acting on the flat parameter vector.

Every optimizer takes the SUM of the gradients over the mini-batch and its size m, so
that g = sum / m below is the mean gradient, and updates `params` in place. The sum is a
scratch buffer the optimizer may overwrite: folding 1/m into eta saves a pass over the
vector, which matters for wide networks where the step is memory-bound. Their state is flat
vectors of the same layout, so it is checkpointed as plain arrays.

    sgd       w <- w - eta g                               (the seed's rule)
    momentum  v <- mu v - eta g;  w <- w + v               (Nielsen's form)
    nesterov  v <- mu v - eta g;  w <- w + mu v - eta g    (Sutskever's reformulation)
    adam      m <- b1 m + (1-b1) g;  s <- b2 s + (1-b2) g^2;
              w <- w - eta m_hat / (sqrt(s_hat) + eps)     (Kingma & Ba, bias-corrected)

L2 weight decay adds lambda w to g on the weights (not the biases), i.e. the gradient of
lambda/2 ||W||^2. Schedules give eta at a step: constant, step (times gamma every k
epochs) and cosine (from eta to 0 over the run).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

Array = np.ndarray
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam")
SCHEDULES = ("constant", "step", "cosine")


@dataclass(frozen=True)
class Schedule:
    name: str = "constant"
    step_epochs: int = 10  # for "step": multiply by gamma every step_epochs epochs
    gamma: float = 0.1
    steps_per_epoch: int = 1
    total_steps: int = 1  # for "cosine": eta reaches 0 after this many steps

    def lr(self, base: float, step: int) -> float:
        if self.name == "constant":
            return base
        if self.name == "step":
            return base * self.gamma ** (step // (self.step_epochs * self.steps_per_epoch))
        t = min(step, self.total_steps) / max(self.total_steps, 1)
        return 0.5 * base * (1.0 + math.cos(math.pi * t))


@dataclass
class Optimizer:
    name: str
    lr: float
    schedule: Schedule
    momentum: float = 0.9
    l2: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    decay_mask: Array | None = None  # 1 on weights, 0 on biases; needed when l2 > 0
    state: dict[str, Array] = field(default_factory=dict)

    def init_state(self, params: Array) -> None:
        names = {"sgd": [], "momentum": ["velocity"], "nesterov": ["velocity"], "adam": ["m", "s"]}
        self.state = {k: np.zeros_like(params) for k in names[self.name]}

    def step(self, params: Array, grad_sum: Array, m: int, step: int) -> None:
        """Apply one update in place; `step` counts the updates already applied (0-based).
        `grad_sum` (the sum over m examples) is overwritten."""
        eta = self.schedule.lr(self.lr, step)
        g = grad_sum
        if self.name == "sgd" and not self.l2:
            g *= -eta / m  # w <- w - eta * (sum / m), in two passes and no temporary
            params += g
            return
        g /= m
        if self.l2:
            assert self.decay_mask is not None  # make_optimizer sets it whenever l2 > 0
            g += self.l2 * self.decay_mask * params
        if self.name == "sgd":
            params -= eta * g
        elif self.name in ("momentum", "nesterov"):
            v = self.state["velocity"]
            v *= self.momentum
            v -= eta * g
            if self.name == "momentum":
                params += v
            else:
                params += self.momentum * v - eta * g
        else:
            m, s, t = self.state["m"], self.state["s"], step + 1
            m *= self.beta1
            m += (1.0 - self.beta1) * g
            s *= self.beta2
            s += (1.0 - self.beta2) * (g * g)
            m_hat = m / (1.0 - self.beta1**t)
            s_hat = s / (1.0 - self.beta2**t)
            params -= eta * m_hat / (np.sqrt(s_hat) + self.eps)
