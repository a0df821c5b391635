"""The noise a step draws, and the inputs a strategy hands the loop."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ltx2train.config import ObjectiveConfig
from ltx2train.training.objective import sample_sigmas


@dataclass
class StepInputs:
    """What the loop feeds the transformer and what the loss compares its prediction with. The targets cover the
    generated clip's tokens only: tokens appended after them (IC-LoRA's reference) are sliced off the prediction."""

    model_kwargs: dict  # keyword arguments of LTX2VideoTransformer3DModel.forward
    video_target: torch.Tensor  # (B, N_video, C)
    audio_target: torch.Tensor  # (B, N_audio, C_audio)
    video_loss_mask: torch.Tensor  # (B, N_video): 0 for given tokens
    audio_loss_mask: torch.Tensor  # (B, N_audio)
    sigma: torch.Tensor  # (B,) the sample's drawn noise level (video's; audio's with independent sigmas)


def draw_noise(
    generator,
    video_x0: torch.Tensor,
    audio_x0: torch.Tensor,
    objective_cfg: ObjectiveConfig,
    sigma: torch.Tensor | None = None,
):
    """(sigma (B,), video noise, audio noise). ``generator``: one for the batch, or a list with one per sample
    (the trainer's: each sample's noise then depends on the sample and the step alone, not on which process
    drew it or with whom it was batched, so a run is the same at any world size)."""
    if not isinstance(generator, (list, tuple)):
        if sigma is None:
            sigma = sample_sigmas(video_x0.shape[0], video_x0.shape[1], objective_cfg, generator)
        return (
            sigma,
            torch.randn(video_x0.shape, generator=generator, dtype=video_x0.dtype),
            torch.randn(audio_x0.shape, generator=generator, dtype=audio_x0.dtype),
        )
    sigmas, video, audio = [], [], []
    for g in generator:
        sigmas.append(sample_sigmas(1, video_x0.shape[1], objective_cfg, g))
        video.append(torch.randn((1, *video_x0.shape[1:]), generator=g, dtype=video_x0.dtype))
        audio.append(torch.randn((1, *audio_x0.shape[1:]), generator=g, dtype=audio_x0.dtype))
    return (torch.cat(sigmas) if sigma is None else sigma), torch.cat(video), torch.cat(audio)
