"""Step windows: on which sampling steps each cross-frame constraint acts.

A window is a pair of fractions ``(start, end)`` of the number of steps ``S`` that are **actually
sampled**. Step ``s`` runs from ``0`` (the first, noisiest sampled step) to ``S-1``.

Rule (deliberate deviation from the reference, ``keyframe/ALGORITHM.md`` §2, §10 item 1): the reference
counts windows on the full 0…T DDIM grid even when the SDEdit start skips the first steps, so its
shape-aware fusion window (steps 0–2) is a no-op for any denoise strength below 0.9. Here the
windows count the steps the sampler really runs (ComfyUI's ``denoise`` samples exactly ``steps``
steps over a shortened σ range), so every window means the same thing at every denoise strength.

Inclusive / strict, as in the reference (``keyframe/ALGORITHM.md`` §2):

* cross-frame attention, shape-aware fusion, AdaIN: **inclusive**, ``S·start ≤ s ≤ S·end``;
* pixel-aware fusion: **strict**, ``S·start < s < S·end``.

A window with ``start > end`` is empty (that is how a constraint is switched off, as in the
reference's web UI). Comparisons allow 1e-6 of float slack, so ``20·0.1`` counts as 2.

Few steps (``S ≤ FEW_STEPS`` = 8: LCM, Lightning, Hyper-SD, Turbo): a window that is open (``start <
end``, or ``start = end`` for an inclusive one) and starts before the end of sampling (``start < 1``)
but holds no step by the rule above acts on exactly one step: the step whose span
``[s/S, (s+1)/S)`` holds ``start`` — one later for a strict window (it acts after its start) —
at most ``S−1``. So every constraint the user left on acts at least once: at ``S = 4`` the default
AdaIN window ``0.8–1`` (``3.2 ≤ s ≤ 4``, no step) acts on step 3. ``(1, 1)``, the reference's way of
switching AdaIN off, stays off. At ``S > 8`` nothing changes.

Defaults at ``S = 20``: cross 0–19, shape fusion 0–2, pixel fusion 11–15, AdaIN 16–19.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..common.errors import input_error
from ..common.settings import Setting, declare

_SLACK = 1e-6
#: Up to this many sampled steps, an open window that holds no step acts on its nearest one.
FEW_STEPS = 8
#: Bounds of a window's ends: fractions of the sampled steps.
FRACTION_RANGE = (0.0, 1.0)
#: Widget step of a window's ends.
FRACTION_STEP = 0.05


@dataclass(frozen=True)
class StepWindow:
    """Fractions ``(start, end)`` of the sampled steps; ``strict`` excludes both ends.

    Example:
        >>> StepWindow(0.0, 0.1).steps(20)
        [0, 1, 2]
        >>> StepWindow(0.5, 0.8, strict=True).steps(20)
        [11, 12, 13, 14, 15]
        >>> StepWindow(1.0, 0.0).steps(20)
        []
        >>> StepWindow(0.8, 1.0).steps(4), StepWindow(1.0, 1.0).steps(4)  # few steps: nearest step
        ([3], [])
    """

    start: float
    end: float
    strict: bool = False

    @property
    def enabled(self) -> bool:
        """False when ``start > end`` (the constraint is switched off)."""
        return self.start <= self.end

    def _inside(self, step: int, total: int) -> bool:
        low, high = total * self.start, total * self.end
        if self.strict:
            return low + _SLACK < step < high - _SLACK
        return low - _SLACK <= step <= high + _SLACK

    def contains(self, step: int, total: int) -> bool:
        """True if sampled step ``step`` (0-based, of ``total`` sampled steps) is in the window."""
        if not self.enabled or not 0 <= step < total:
            return False
        if total <= FEW_STEPS:
            return step in self.steps(total)
        return self._inside(step, total)

    def steps(self, total: int) -> list[int]:
        """All steps of ``0 … total-1`` in the window, ascending (with the few-step rule of the module
        docstring at ``total ≤ FEW_STEPS``)."""
        if not self.enabled:
            return []
        found = [step for step in range(total) if self._inside(step, total)]
        open_window = self.start < self.end or (self.start == self.end and not self.strict)
        if found or total > FEW_STEPS or not open_window or self.start >= 1 - _SLACK or total < 1:
            return found
        step = int(total * self.start + _SLACK) + (1 if self.strict else 0)
        return [min(step, total - 1)]

    def first(self, total: int) -> int | None:
        """The first step in the window, or ``None`` if it is empty at ``total`` steps."""
        steps = self.steps(total)
        return steps[0] if steps else None


#: Cross-frame attention (``cross_period``, default ``(0, 1)``): every step.
CROSS_PERIOD = StepWindow(0.0, 1.0)
#: Shape-aware latent fusion (``warp_period``, default ``(0, 0.1)``, paper ``T_s = 0.1·T``).
WARP_PERIOD = StepWindow(0.0, 0.1)
#: Pixel-aware latent fusion (``mask_period``, default ``(0.5, 0.8)``, strict, pass 2 only).
MASK_PERIOD = StepWindow(0.5, 0.8, strict=True)
#: Colour-aware AdaIN (``ada_period``; the paper's and web UI's ``(0.8, 1)``; the reference's JSON
#: default ``(1, 1)`` switches it off, ``keyframe/ALGORITHM.md`` §10 item 5).
ADA_PERIOD = StepWindow(0.8, 1.0)


def window(name: str, start: float, end: float, strict: bool = False) -> StepWindow:
    """A validated :class:`StepWindow` from the inputs ``<name>_start`` / ``<name>_end``.

    Raises:
        InputError: a fraction outside [0, 1].
    """
    low, high = FRACTION_RANGE
    for suffix, value in (("start", start), ("end", end)):
        if not low <= float(value) <= high:
            raise input_error(f"{name}_{suffix}", "a fraction of the sampled steps in [0, 1]", value,
                              f"use 0…1; set {name}_start > {name}_end to switch the constraint off")
    return StepWindow(float(start), float(end), strict)


def window_settings(name: str, default: StepWindow, start_tooltip: str, end_tooltip: str) -> tuple[Setting, Setting]:
    """The two settings ``<name>_start`` / ``<name>_end`` of a window whose default is ``default``.

    Example:
        >>> start, end = window_settings("warp", WARP_PERIOD, "Start.", "End.")
        >>> start.name, end.default, end.max
        ('warp_start', 0.1, 1.0)
    """
    low, high = FRACTION_RANGE
    return (declare(f"{name}_start", default.start, start_tooltip, min=low, max=high, step=FRACTION_STEP),
            declare(f"{name}_end", default.end, end_tooltip, min=low, max=high, step=FRACTION_STEP))


class StepClock:
    """Maps the σ a model call receives to the index of the sampled step it belongs to.

    Every hook keys its state by this index (never by call order), so the constraints work with
    ComfyUI running cond and uncond together or apart, and with samplers that call the model more
    than once per step.

    Rule: step ``i`` is the largest index with ``σ_i ≥ σ`` (relative slack 1e-4). A σ on the grid
    maps to its own step; an intermediate σ (``dpm_2`` midpoints) to the step being taken; a
    second evaluation at ``σ_{i+1}`` (Heun's correction) to step ``i+1``.

    Args:
        sigmas: the sampled schedule ``[S+1]``, descending, usually ending with 0.

    Example:
        >>> clock = StepClock(torch.tensor([10.0, 5.0, 1.0, 0.0]))
        >>> clock.total, clock.index(torch.tensor([5.0])), clock.index(3.0), clock.index(12.0)
        (3, 1, 1, 0)
    """

    def __init__(self, sigmas: torch.Tensor) -> None:
        values = torch.as_tensor(sigmas).detach().double().cpu().flatten()
        if values.numel() < 2:
            raise input_error("steps", "at least one sampling step (a σ schedule of 2+ values)",
                              f"{values.numel()} σ values", "raise steps or denoise above 0")
        self.sigmas = values.float()
        self.total = values.numel() - 1
        self._grid = values[: self.total].tolist()
        self._last: tuple[object, int] | None = None

    def index(self, sigma: torch.Tensor | float) -> int:
        """Step index of a model call at ``sigma`` (a tensor of per-sample σ or a float).

        The σ tensor of one model call reaches every patched attention block and the post-CFG hook;
        the step of the last tensor seen is remembered (holding it keeps its identity unique), so a
        GPU σ is read back to the host once per model call instead of once per block.
        """
        if self._last is not None and self._last[0] is sigma:
            return self._last[1]
        value = float(sigma.flatten()[0]) if isinstance(sigma, torch.Tensor) else float(sigma)
        step = 0
        for i, grid_sigma in enumerate(self._grid):
            if grid_sigma >= value * (1 - 1e-4):
                step = i
        self._last = (sigma, step)
        return step
