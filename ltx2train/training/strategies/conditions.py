"""What strategies are made of: the token state of one step, and the conditions that change it.

A step starts with every token of both modalities generated: noised at the sample's sigma and in the loss.
Each piece below then changes that state, and a strategy is an ordered list of them (``composed.py``):

    Given(m)         modality ``m`` given clean: sigma 0 (the input is the clean latent, no noise), no loss
    Absent()         audio not run: one zero token, no loss, no audio-video cross-attention
    FirstFrame(p)    the first latent frame given, for a sample with probability p (the image-to-video condition)
    Reference(d)     the reference video's latents appended as clean tokens, positions scaled by d to the target
                     grid; the prediction for them is sliced off (IC-LoRA)

A given token has sigma 0, so ``(1 - sigma) * x0 + sigma * noise`` is ``x0`` exactly, and loss mask 0, so the loss
sends it no gradient. Random choices come from :class:`Draws`, the step's per-sample generators.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ltx2train.models.forward import pack_audio, pack_video


@dataclass
class ModalityTokens:
    """One modality's tokens in a step, (B, N, ...)."""

    x0: torch.Tensor  # (B, N, C) clean latents
    noise: torch.Tensor  # (B, N, C)
    sigma: torch.Tensor  # (B, N) noise level per token
    loss_mask: torch.Tensor  # (B, N)
    sample_sigma: torch.Tensor  # (B,) the level the cross-modal modulation sees (0 where the modality is given)

    def give(self, rows=slice(None), tokens=slice(None)) -> None:
        """These tokens given clean: no noise and no loss."""
        self.sigma[rows, tokens] = 0.0
        self.loss_mask[rows, tokens] = 0.0

    def append_given(self, x0: torch.Tensor) -> None:
        """Clean tokens after the existing ones (B, N', C): sigma 0, no loss, no noise."""
        self.x0 = torch.cat([self.x0, x0.to(self.x0.dtype)], dim=1)
        self.noise = torch.cat([self.noise, torch.zeros_like(x0, dtype=self.noise.dtype)], dim=1)
        self.sigma = torch.cat([self.sigma, self.sigma.new_zeros(x0.shape[:2])], dim=1)
        self.loss_mask = torch.cat([self.loss_mask, self.loss_mask.new_zeros(x0.shape[:2])], dim=1)


class Draws:
    """Uniform draws in [0, 1), one per sample, from the step's generator(s): a list with one per sample (the
    trainer's: a sample's choices then depend on the sample and the step alone) or one for the batch."""

    def __init__(self, generator, batch_size: int):
        self.generator, self.batch_size = generator, batch_size

    def uniform(self) -> torch.Tensor:
        if isinstance(self.generator, (list, tuple)):
            return torch.cat([torch.rand(1, generator=g) for g in self.generator])
        return torch.rand(self.batch_size, generator=self.generator)


@dataclass
class StepState:
    """Everything the conditions may change before the transformer call is built."""

    batch: dict[str, torch.Tensor]
    video: ModalityTokens
    audio: ModalityTokens
    grid: tuple[int, int, int]  # the generated clip's latent frames, height, width
    fps: float
    draws: Draws
    training: bool  # False for the validation loss: probabilistic conditions then always apply
    video_coords: torch.Tensor | None = None  # (B, 3, N_video, 2) when tokens are appended
    isolate_modalities: bool = False
    notes: dict = field(default_factory=dict)  # per-condition facts for logs and tests

    def chosen(self, probability: float) -> torch.Tensor:
        """(B,) bool: the samples a condition with ``probability`` applies to in this step."""
        if not self.training:
            return torch.full((self.draws.batch_size,), probability > 0)
        return self.draws.uniform() < probability


class Given:
    """A whole modality given clean (a2v: the audio; v2a: the video)."""

    def __init__(self, modality: str):
        self.modality = modality

    def apply(self, state: StepState) -> None:
        tokens: ModalityTokens = getattr(state, self.modality)
        tokens.give()
        tokens.sample_sigma = torch.zeros_like(tokens.sample_sigma)


class Absent:
    """Audio not run: one zero token stands in for it, outside the loss, and the cross-modal attention is off,
    so nothing of the audio reaches the video."""

    def __init__(self, channels: int | None):
        self.channels = channels  # the transformer's audio_in_channels

    def apply(self, state: StepState) -> None:
        batch, channels = state.video.x0.shape[0], self.channels
        if channels is None and "audio_latents" in state.batch:
            channels = pack_audio(state.batch["audio_latents"][:, :, :1]).shape[-1]
        if channels is None:
            raise ValueError("audio none: the stand-in audio token needs the transformer's audio_in_channels")
        zeros = torch.zeros(batch, 1, channels, dtype=state.video.x0.dtype)
        state.audio = ModalityTokens(
            zeros, zeros.clone(), torch.zeros(batch, 1), torch.zeros(batch, 1), torch.zeros(batch)
        )
        state.isolate_modalities = True


class FirstFrame:
    """The first latent frame given, for each sample with ``probability``: the cache's ``first_frame_latents``
    (the frame encoded alone, as inference encodes the input image) where it has them, else the clip's own."""

    def __init__(self, probability: float):
        self.probability = probability

    def apply(self, state: StepState) -> None:
        rows = state.chosen(self.probability)
        _, height, width = state.grid
        first = height * width  # tokens of latent frame 0 (frame-major packing)
        if "first_frame_latents" in state.batch:
            image = pack_video(state.batch["first_frame_latents"]).to(state.video.x0.dtype)
            state.video.x0[rows, :first] = image[rows]
        state.video.give(rows, slice(0, first))
        state.notes["first_frame_rows"] = rows


class Reference:
    """IC-LoRA: the reference video's latents (stored at 1/``downscale`` of the clip's size) appended after the
    clip's tokens, clean; their positions are the reference grid's scaled by ``downscale`` in height and width,
    so that they line up with the target grid. ``rope``: the transformer's video RoPE, whose
    ``prepare_video_coords`` gives the positions the transformer would compute itself."""

    def __init__(self, downscale: int, rope):
        self.downscale, self.rope = downscale, rope

    def apply(self, state: StepState) -> None:
        reference = state.batch["reference_latents"]  # (B, C, F, H/d, W/d)
        batch = reference.shape[0]
        frames, height, width = state.grid
        coords = self.rope.prepare_video_coords(batch, frames, height, width, "cpu", fps=state.fps)
        ref_coords = self.rope.prepare_video_coords(batch, *reference.shape[2:], "cpu", fps=state.fps)
        ref_coords[:, 1:] = ref_coords[:, 1:] * self.downscale
        state.video_coords = torch.cat([coords, ref_coords], dim=2)
        state.video.append_given(pack_video(reference))
        state.notes["reference_tokens"] = ref_coords.shape[2]
