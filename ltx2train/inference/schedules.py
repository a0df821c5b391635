"""Sigma schedules of the LTX-2 inference pipeline, all computed here and handed to a pass-through scheduler.

- ``DISTILLED_SIGMAS``: the fixed 8-step schedule of the distilled model (stage 1 of the distilled pipeline).
- ``STAGE2_SIGMAS``: the 3-step refinement schedule of stage 2 (a tail of the distilled one).
  Both are Lightricks' pre-trained values from ltx-pipelines ``ltx_pipelines/utils/constants.py``, as
  diffusers ships them (``diffusers.pipelines.ltx2.utils.DISTILLED_SIGMA_VALUES`` /
  ``STAGE_2_DISTILLED_SIGMA_VALUES``) and DiffSynth's ``FlowMatchScheduler("LTX-2")`` special cases
  ``"distilled_stage1"`` / ``"stage2"`` hard-code them.
- :func:`ltx2_sigmas`: the regular schedule, as ltx-pipelines' ``LTX2Scheduler`` and DiffSynth compute it:
  linear in ``[denoising_strength, 0)``, exponential time shift with ``mu`` taken at the 4096-token anchor
  (``mu = 2.05``, whatever the clip size), then stretched so that the last sigma is ``terminal`` (0.1).
  diffusers' ``LTX2Pipeline`` instead shifts by the actual token count; we follow DiffSynth, so a DiffSynth
  user gets the same schedule.
"""

from __future__ import annotations

import math

DISTILLED_SIGMAS = (1.0, 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875)
STAGE2_SIGMAS = (0.909375, 0.725, 0.421875)

BASE_SHIFT, MAX_SHIFT = 0.95, 2.05  # at BASE_TOKENS and MAX_TOKENS tokens
BASE_TOKENS, MAX_TOKENS = 1024, 4096
SHIFT_ANCHOR_TOKENS = MAX_TOKENS
TERMINAL_SIGMA = 0.1


def shift_mu(
    num_tokens: int,
    base_shift: float = BASE_SHIFT,
    max_shift: float = MAX_SHIFT,
    base_tokens: int = BASE_TOKENS,
    max_tokens: int = MAX_TOKENS,
) -> float:
    """The time shift's ``mu``: linear in the token count through (base_tokens, base_shift) and (max_tokens,
    max_shift), as the LTX-2 scheduler computes it (training's sigma shift uses it with ``objective.*``)."""
    slope = (max_shift - base_shift) / (max_tokens - base_tokens)
    return base_shift + slope * (num_tokens - base_tokens)


def ltx2_sigmas(
    num_inference_steps: int,
    denoising_strength: float = 1.0,
    *,
    tokens: int = SHIFT_ANCHOR_TOKENS,
    terminal: float = TERMINAL_SIGMA,
) -> list[float]:
    """``num_inference_steps`` decreasing sigmas from ``denoising_strength`` (the final 0 is the scheduler's)."""
    mu = math.exp(shift_mu(tokens))
    linear = [denoising_strength * (1 - i / num_inference_steps) for i in range(num_inference_steps)]
    shifted = [mu / (mu + (1 / s - 1)) for s in linear]
    scale = (1 - shifted[-1]) / (1 - terminal)
    return [1 - (1 - s) / scale for s in shifted]


def stage1_sigmas(num_inference_steps: int, denoising_strength: float, distilled: bool) -> list[float]:
    """The first (or only) stage: the distilled model's fixed schedule ignores steps and strength, like DiffSynth."""
    return list(DISTILLED_SIGMAS) if distilled else ltx2_sigmas(num_inference_steps, denoising_strength)


def passthrough_scheduler():
    """A flow-matching Euler scheduler that uses the given sigmas as they are (no shift, no terminal stretch)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=False, shift=1.0, shift_terminal=None)
