r"""Learning-rate schedule: linear warm-up, then poly or cosine decay (a CPU training recipe).

The paper trains with a constant Adam learning rate of 1e-4 until convergence
(§2.1) on a GPU. On 2 CPU cores the budget is a few hundred steps, and a
larger peak learning rate only helps if the first steps are gentle (Adam's
second-moment estimates are still noisy) and the last ones small (to settle
into a minimum instead of bouncing around it). The multiplier
:math:`\lambda(k)` of the base learning rate :math:`\eta_0` at optimiser step
:math:`k = 0, 1, \dots` (:math:`\eta_k = \eta_0\,\lambda(k)`, dimensionless) is

.. math::

    \lambda(k) = \begin{cases}
        \dfrac{k + 1}{W} & k < W \quad\text{(linear warm-up)}\\[1ex]
        \lambda_{min} + (1 - \lambda_{min})\, d(u) & k \ge W,\quad
        u = \min\!\Big(1, \dfrac{k - W}{K - W}\Big)
    \end{cases}

with :math:`W` warm-up steps, :math:`K` total steps and the decay

* ``"poly"``: :math:`d(u) = (1 - u)^{p}`, :math:`p = 0.9` — nnU-Net's
  polynomial schedule (Isensee et al. 2021, the paper's [10]), here per step
  rather than per epoch;
* ``"cosine"``: :math:`d(u) = \tfrac12 (1 + \cos \pi u)`.

The warm-up starts at :math:`\eta_0/W` (not 0, so no step is wasted) and
reaches :math:`\eta_0` at step :math:`W - 1`; steps beyond :math:`K` keep
:math:`\lambda_{min}`.

:func:`lr_lambda` returns the function ``step → factor`` that
:class:`torch.optim.lr_scheduler.LambdaLR` expects; :func:`build_scheduler`
wraps an optimiser with it. Call ``scheduler.step()`` once after every
``optimiser.step()``, and checkpoint ``scheduler.state_dict()`` with the
optimiser for exact resume.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch

#: Decay shapes after the warm-up (module docstring).
DECAYS: tuple[str, ...] = ("poly", "cosine")

#: nnU-Net's exponent of the polynomial decay.
POLY_POWER: float = 0.9


def lr_factor(step: int, *, warmup_steps: int, total_steps: int, decay: str = "poly",
              power: float = POLY_POWER, min_factor: float = 0.0) -> float:
    r"""Multiplier :math:`\lambda(k)` of the base learning rate at 0-based optimiser step ``step``.

    Parameters
    ----------
    step
        :math:`k \ge 0`, the number of optimiser steps already taken.
    warmup_steps
        :math:`W \ge 0`; 0 disables the warm-up.
    total_steps
        :math:`K > W`: the step at which the decay reaches ``min_factor``.
    decay
        ``"poly"`` :math:`(1-u)^{p}` or ``"cosine"`` :math:`\tfrac12(1+\cos\pi u)`.
    power
        :math:`p` of the poly decay (nnU-Net: 0.9).
    min_factor
        :math:`\lambda_{min} \in [0, 1)`, the factor at and after ``total_steps``.
    """
    if decay not in DECAYS:
        raise ValueError(f"decay must be one of {DECAYS}, got {decay!r}")
    if step < 0 or warmup_steps < 0 or total_steps <= warmup_steps:
        raise ValueError(f"need step >= 0 and 0 <= warmup_steps < total_steps, got "
                         f"step={step}, warmup_steps={warmup_steps}, total_steps={total_steps}")
    if not 0.0 <= min_factor < 1.0:
        raise ValueError(f"min_factor must be in [0, 1), got {min_factor}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    u = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
    d = (1.0 - u) ** power if decay == "poly" else 0.5 * (1.0 + math.cos(math.pi * u))
    return min_factor + (1.0 - min_factor) * d


def lr_lambda(*, warmup_steps: int, total_steps: int, decay: str = "poly", power: float = POLY_POWER,
              min_factor: float = 0.0) -> Callable[[int], float]:
    """``step → factor`` (:func:`lr_factor` with these settings) for :class:`~torch.optim.lr_scheduler.LambdaLR`.

    Arguments are checked now, not at the first step. The result is a
    :func:`functools.partial` of a module-level function, so it pickles.
    """
    lr_factor(0, warmup_steps=warmup_steps, total_steps=total_steps, decay=decay, power=power,
              min_factor=min_factor)
    return functools.partial(lr_factor, warmup_steps=int(warmup_steps), total_steps=int(total_steps), decay=decay,
                             power=float(power), min_factor=float(min_factor))


def build_scheduler(optimiser: torch.optim.Optimizer, *, warmup_steps: int, total_steps: int,
                    decay: str = "poly", power: float = POLY_POWER,
                    min_factor: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """:class:`~torch.optim.lr_scheduler.LambdaLR` over ``optimiser`` with :func:`lr_lambda`.

    Construction sets every group's learning rate to ``initial_lr × λ(0)``;
    call ``.step()`` after each ``optimiser.step()``.
    """
    return torch.optim.lr_scheduler.LambdaLR(
        optimiser, lr_lambda(warmup_steps=warmup_steps, total_steps=total_steps, decay=decay, power=power,
                             min_factor=min_factor))


def default_warmup(total_steps: int, *, fraction: float = 0.05, at_least: int = 1) -> int:
    """Warm-up length: ``fraction`` of the budget (5 %: 30 of 600 steps), at least ``at_least``,
    and always shorter than ``total_steps``."""
    if total_steps < 2:
        raise ValueError("need at least 2 steps for a warm-up and a decay")
    return int(min(total_steps - 1, max(at_least, round(fraction * total_steps))))
