"""A modality given at inference, as the a2v and v2a strategies train it: the transformer sees the given audio
(a2v) or video (v2a) clean, at timestep 0, at every step, and the other modality is generated.

diffusers' ``LTX2Pipeline`` denoises both modalities; two hooks make one of them given without forking it:

- a forward pre-hook on the transformer puts the given clean tokens in place of what the pipeline feeds it
  (repeated over the guidance batch), with timestep and cross-modal sigma 0 for them and the pipeline's own for
  the other modality;
- the given video replaces the pipeline's video latents after every step (its step callback), so the clip
  decodes to it; given audio is decoded from its latents after the call (the pipeline's audio is discarded).

Tokens are the cache's normalised, packed latents: what the pipeline's own latents are between steps.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from ltx2train.data.media import read_audio, read_video_frames, fit_frames
from ltx2train.models.forward import call_hook


def _repeat(tokens: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return tokens.to(like.device, like.dtype).repeat(like.shape[0] // tokens.shape[0], 1, 1)


@contextmanager
def given_modality(
    transformer: torch.nn.Module, *, video: torch.Tensor | None = None, audio: torch.Tensor | None = None
):
    """While active, every forward of ``transformer`` sees ``video`` / ``audio`` tokens (1, N, C) clean."""
    if video is None and audio is None:
        yield
        return

    def give(kwargs):
        timestep = kwargs["timestep"]
        sigma = kwargs.get("sigma") if kwargs.get("sigma") is not None else timestep
        audio_timestep = kwargs.get("audio_timestep") if kwargs.get("audio_timestep") is not None else timestep
        audio_sigma = kwargs.get("audio_sigma") if kwargs.get("audio_sigma") is not None else sigma
        if audio is not None:
            kwargs["audio_hidden_states"] = _repeat(audio, kwargs["audio_hidden_states"])
            audio_timestep, audio_sigma = torch.zeros_like(audio_timestep), torch.zeros_like(audio_sigma)
        if video is not None:
            kwargs["hidden_states"] = _repeat(video, kwargs["hidden_states"])
            timestep, sigma = torch.zeros_like(timestep), torch.zeros_like(sigma)
        kwargs.update(timestep=timestep, sigma=sigma, audio_timestep=audio_timestep, audio_sigma=audio_sigma)

    with call_hook(transformer, give):
        yield


def keep_video(video: torch.Tensor):
    """A ``callback_on_step_end`` that puts the given video tokens back after every step."""

    def callback(pipe, step, timestep, callback_kwargs):
        latents = callback_kwargs["latents"]
        return {"latents": _repeat(video, latents)}

    return callback


def encode_given_video(video_vae, path, height: int, width: int, num_frames: int, fps: float) -> torch.Tensor:
    """A video file -> its clean tokens (1, F'*H'*W', C) at the sample's size, as ``prepare`` encodes clips."""
    from ltx2train.data.encode import encode_video
    from ltx2train.models.forward import pack_video

    pixels = fit_frames(read_video_frames(path, num_frames, fps), height, width)
    return pack_video(encode_video(video_vae, pixels)[None])


def encode_given_audio(audio_vae, path, num_frames: int, fps: float) -> torch.Tensor:
    """A file's audio (a video's own, or an audio file) -> its clean tokens (1, L, C * M) over the sample."""
    from ltx2train.data.encode import audio_latent_length, encode_audio
    from ltx2train.models.forward import pack_audio

    waveform = read_audio(path, sample_rate=audio_vae.config.sample_rate, duration_s=num_frames / fps)
    latents = encode_audio(audio_vae, waveform, audio_latent_length(num_frames, fps, audio_vae))
    return pack_audio(latents[None])


@torch.no_grad()
def decode_audio_tokens(audio_vae, vocoder, tokens: torch.Tensor) -> torch.Tensor:
    """Clean audio tokens (1, L, C * M) -> waveform (channels, samples), as the pipeline decodes its latents."""
    device, dtype = next(audio_vae.parameters()).device, next(audio_vae.parameters()).dtype
    packed = tokens.float() * audio_vae.latents_std.float() + audio_vae.latents_mean.float()
    latents = packed.unflatten(2, (audio_vae.config.latent_channels, -1)).transpose(1, 2)  # (1, C, L, M)
    mel = audio_vae.decode(latents.to(device, dtype), return_dict=False)[0]
    return vocoder(mel.to(next(vocoder.parameters()).dtype))[0].float().cpu()
