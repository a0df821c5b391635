"""Rectified-flow objective: shifted logit-normal sigmas, noisy inputs, velocity targets, masked losses.

x_t = (1 - sigma) * x0 + sigma * noise, target v = noise - x0. Sigma is drawn logit-normal and shifted
by the token count exactly like the LTX-2 inference scheduler's dynamic shift: the shift by exp(mu) of a
logit-normal sample is the logit-normal with its mean moved by mu.
"""

from __future__ import annotations

import math

import torch

from ltx2train.config import ObjectiveConfig
from ltx2train.inference.schedules import shift_mu


def sample_sigmas(
    batch_size: int,
    num_tokens: int,
    objective_cfg: ObjectiveConfig,
    generator: torch.Generator | None = None,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """(B,) sigmas in (0, 1): sigmoid(N(logit_mean + mu, logit_std))."""
    mu = shift_mu(
        num_tokens,
        objective_cfg.shift_base,
        objective_cfg.shift_max,
        objective_cfg.shift_base_tokens,
        objective_cfg.shift_max_tokens,
    )
    normal = torch.randn(batch_size, generator=generator, device=device)
    return torch.sigmoid(normal * objective_cfg.logit_std + objective_cfg.logit_mean + mu)


def noisy_and_target(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x0``/``noise`` (B, N, C), ``sigma`` (B,) or (B, N): the transformer input and the velocity target."""
    s = sigma.view(sigma.shape[0], -1, 1).to(x0.dtype)
    return (1.0 - s) * x0 + s * noise, noise - x0


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the tokens where ``loss_mask`` (B, N) is 1; masked tokens get no gradient."""
    mask = loss_mask.to(prediction.dtype).unsqueeze(-1)  # (B, N, 1)
    squared = (prediction.float() - target.float()).pow(2) * mask
    denominator = mask.sum() * prediction.shape[-1]
    return squared.sum() / denominator.clamp_min(1.0)


@torch.no_grad()
def masked_mse_per_sample(prediction: torch.Tensor, target: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """(B,) the masked mean squared error of each sample (for logging; no graph)."""
    mask = loss_mask.to(torch.float32).unsqueeze(-1)
    squared = (prediction.float() - target.float()).pow(2) * mask
    return squared.sum(dim=(1, 2)) / (mask.sum(dim=(1, 2)) * prediction.shape[-1]).clamp_min(1.0)


def sigma_bucket(sigma: float, num_buckets: int = 4) -> int:
    """Index of the sigma bucket, for loss tracked per noise level."""
    return min(int(math.floor(sigma * num_buckets)), num_buckets - 1)


class SigmaBucketLoss:
    """Mean loss per noise-level bucket over a logging window: where in the schedule the model learns."""

    def __init__(self, num_buckets: int = 4):
        self.num_buckets = num_buckets
        self.reset()

    def reset(self) -> None:
        self.sums = torch.zeros(self.num_buckets, dtype=torch.float64)
        self.counts = torch.zeros(self.num_buckets, dtype=torch.float64)

    def add(self, sigmas: torch.Tensor, losses: torch.Tensor) -> None:
        for sigma, loss in zip(sigmas.tolist(), losses.tolist()):
            bucket = sigma_bucket(sigma, self.num_buckets)
            self.sums[bucket] += loss
            self.counts[bucket] += 1

    def metrics(self, sums: torch.Tensor | None = None, counts: torch.Tensor | None = None) -> dict[str, float]:
        """``loss_sigma_0.25-0.50``-style entries for the buckets that saw samples (optionally all-reduced)."""
        sums = self.sums if sums is None else sums
        counts = self.counts if counts is None else counts
        width = 1.0 / self.num_buckets
        return {
            f"loss_sigma_{i * width:.2f}-{(i + 1) * width:.2f}": float(sums[i] / counts[i])
            for i in range(self.num_buckets)
            if counts[i] > 0
        }
