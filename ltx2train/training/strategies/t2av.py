"""t2av: video and audio both generated from text."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ltx2train.models.forward import AudioTokens, VideoTokens, transformer_kwargs
from ltx2train.training.objective import masked_mse, masked_mse_per_sample, noisy_and_target, sample_sigmas


def pack_video(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, F, H, W) -> (B, F*H*W, C): one token per latent position (patch size 1)."""
    return latents.flatten(2, 4).transpose(1, 2)


def pack_audio(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, L, M) -> (B, L, C*M): all mel bins of one latent frame form a token."""
    return latents.transpose(1, 2).flatten(2, 3)


@dataclass
class StepInputs:
    model_kwargs: dict  # keyword arguments of LTX2VideoTransformer3DModel.forward
    video_target: torch.Tensor  # (B, N_video, C)
    audio_target: torch.Tensor  # (B, N_audio, C_audio)
    video_loss_mask: torch.Tensor  # (B, N_video)
    audio_loss_mask: torch.Tensor  # (B, N_audio)
    sigma: torch.Tensor  # (B,)


def draw_noise(generator, video_x0: torch.Tensor, audio_x0: torch.Tensor, cfg, sigma: torch.Tensor | None = None):
    """(sigma (B,), video noise, audio noise). ``generator``: one for the batch, or a list with one per sample
    (the trainer's: each sample's noise then depends on the sample and the step alone, not on which process
    drew it or with whom it was batched, so a run is the same at any world size)."""
    if not isinstance(generator, (list, tuple)):
        if sigma is None:
            sigma = sample_sigmas(video_x0.shape[0], video_x0.shape[1], cfg, generator)
        return (sigma, torch.randn(video_x0.shape, generator=generator, dtype=video_x0.dtype),
                torch.randn(audio_x0.shape, generator=generator, dtype=audio_x0.dtype))
    sigmas, video, audio = [], [], []
    for g in generator:
        sigmas.append(sample_sigmas(1, video_x0.shape[1], cfg, g))
        video.append(torch.randn((1, *video_x0.shape[1:]), generator=g, dtype=video_x0.dtype))
        audio.append(torch.randn((1, *audio_x0.shape[1:]), generator=g, dtype=audio_x0.dtype))
    return (torch.cat(sigmas) if sigma is None else sigma), torch.cat(video), torch.cat(audio)


class TextToAudioVideo:
    """t2av: video and audio both generated from text; every token is noised and in the loss."""

    name = "t2av"

    def __init__(self, objective_cfg, fps: float):
        self.cfg = objective_cfg
        self.fps = fps

    def inputs(self, batch: dict[str, torch.Tensor], context, generator=None,
               sigma: torch.Tensor | None = None) -> StepInputs:
        """Noisy inputs and targets; ``sigma`` (B,) fixes the noise levels (validation loss) instead of sampling;
        ``generator``: see :func:`draw_noise`."""
        if "audio_latents" not in batch:
            raise ValueError("the t2av strategy needs audio latents in the cache (data.with_audio: true)")
        video = batch["video_latents"]  # (B, C, F, H, W)
        audio = batch["audio_latents"]  # (B, C, L, M)
        batch_size, _, frames, height, width = video.shape
        video_x0, audio_x0 = pack_video(video), pack_audio(audio)
        sigma, video_noise, audio_noise = draw_noise(generator, video_x0, audio_x0, self.cfg, sigma)
        video_loss_mask = torch.ones(video_x0.shape[:2])
        # clips with short audio or none: their padding (or all of it) is in no loss, never trained as silence
        audio_loss_mask = batch["audio_valid"].float() if "audio_valid" in batch else torch.ones(audio_x0.shape[:2])
        # Per-token video timesteps: conditioning tokens (i2v, IC-LoRA) would carry 0 here and mask 0.
        video_sigma = sigma[:, None] * video_loss_mask  # (B, N_video)
        video_in, video_target = noisy_and_target(video_x0, video_noise, video_sigma)
        audio_in, audio_target = noisy_and_target(audio_x0, audio_noise, sigma)
        device = context.video.device
        model_kwargs = transformer_kwargs(
            VideoTokens(video_in, video_sigma, frames, height, width, self.fps), AudioTokens(audio_in, sigma), context,
            sigma, use_cross_timestep=self.cfg.use_cross_timestep, device=device)
        return StepInputs(model_kwargs, video_target.to(device), audio_target.to(device),
                          video_loss_mask.to(device), audio_loss_mask.to(device), sigma)

    def loss(self, video_pred: torch.Tensor, audio_pred: torch.Tensor, inputs: StepInputs):
        video_loss = masked_mse(video_pred, inputs.video_target, inputs.video_loss_mask)
        audio_loss = masked_mse(audio_pred, inputs.audio_target, inputs.audio_loss_mask)
        total = self.cfg.video_loss_weight * video_loss + self.cfg.audio_loss_weight * audio_loss
        per_sample = (self.cfg.video_loss_weight * masked_mse_per_sample(video_pred, inputs.video_target, inputs.video_loss_mask)
                      + self.cfg.audio_loss_weight * masked_mse_per_sample(audio_pred, inputs.audio_target, inputs.audio_loss_mask))
        return total, {"video_loss": video_loss.detach(), "audio_loss": audio_loss.detach(), "per_sample": per_sample}
