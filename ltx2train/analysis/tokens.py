"""Token counts of a step: what one forward of the transformer sees for a clip size, and the recipe's costliest
bucket."""

from __future__ import annotations

from dataclasses import dataclass

from ltx2train.config import Config


@dataclass(frozen=True)
class Tokens:
    """What one step of the transformer sees: ``batch`` clips of ``video`` + ``audio`` + ``text`` tokens."""

    batch: int
    frames: int  # latent grid of the video tokens
    height: int
    width: int
    audio: int
    text: int
    fps: float

    @property
    def video(self) -> int:
        return self.frames * self.height * self.width

    def describe(self) -> dict:
        return {
            "batch": self.batch,
            "video": self.video,
            "audio": self.audio,
            "text": self.text,
            "latent_grid": [self.frames, self.height, self.width],
            "fps": self.fps,
        }

    @classmethod
    def described(cls, d: dict) -> "Tokens":
        """The inverse of ``describe`` (an estimate's ``tokens``)."""
        return cls(d["batch"], *d["latent_grid"], d["audio"], d["text"], d["fps"])


def tokens_for(height: int, width: int, frames: int, fps: float, text: int, batch: int, transformer_config) -> Tokens:
    """Token counts of a clip: one video token per latent position (patch size 1), audio latents at
    ``sampling_rate / hop / scale`` per second (25 for LTX-2), as the pipeline and prepare compute them."""
    t_scale, h_scale, w_scale = transformer_config["vae_scale_factors"]
    per_second = (
        transformer_config["audio_sampling_rate"]
        / transformer_config["audio_hop_length"]
        / transformer_config["audio_scale_factor"]
    )
    return Tokens(
        batch,
        (frames - 1) // t_scale + 1,
        height // h_scale,
        width // w_scale,
        max(1, round(frames / fps * per_second)),
        text,
        fps,
    )


def largest_bucket(cfg: Config, transformer_config) -> tuple[str, Tokens]:
    """The bucket whose step costs the most: the most video tokens, audio weighted by its narrower width."""
    from ltx2train.data import buckets

    ratio = (
        transformer_config["audio_num_attention_heads"]
        * transformer_config["audio_attention_head_dim"]
        / (transformer_config["num_attention_heads"] * transformer_config["attention_head_dim"])
    )
    candidates = [
        (
            b.name,
            tokens_for(
                b.height,
                b.width,
                b.frames,
                cfg.data.fps,
                cfg.data.max_sequence_length,
                cfg.data.batch_size,
                transformer_config,
            ),
        )
        for b in buckets.from_config(cfg.data)
    ]
    return max(candidates, key=lambda c: c[1].video + ratio * c[1].audio)
