"""The one place that knows the keyword arguments of diffusers' ``LTX2VideoTransformer3DModel.forward``.

Strategies describe each modality (tokens, per-token sigmas, grid) and the text context; this turns that into
the call, so that a diffusers signature change is one edit here, not one per strategy.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch

from ltx2train.models.text_encoder import ProjectedText

TIMESTEP_SCALE = 1000.0  # LTX2VideoTransformer3DModel's timestep_scale_multiplier


def pack_video(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, F, H, W) -> (B, F*H*W, C): one token per latent position (patch size 1), as ``LTX2Pipeline`` packs."""
    return latents.flatten(2, 4).transpose(1, 2)


def pack_audio(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, L, M) -> (B, L, C*M): all mel bins of one latent frame form a token."""
    return latents.transpose(1, 2).flatten(2, 3)


@dataclass
class VideoTokens:
    tokens: torch.Tensor  # (B, N_video, C) noisy latents, packed with patch size 1
    sigma: torch.Tensor  # (B, N_video) per-token noise level (0 for conditioning tokens)
    frames: int  # latent grid
    height: int
    width: int
    fps: float
    coords: torch.Tensor | None = None  # (B, 3, N_video, 2) positions, when tokens beyond the grid are appended


@dataclass
class AudioTokens:
    tokens: torch.Tensor  # (B, N_audio, C_audio * mel_bins)
    sigma: torch.Tensor  # (B,) noise level


def uses_keyframes(config) -> bool:
    """LTX-2.5's keyframe absolute position embedding (a learned vector added to the tokens of keyframes), from a
    transformer's config: a built module's ``.config`` or a variant spec's."""
    return bool(config.get("use_keyframes_abs_pos_embedding", False))


def keyframes_mask(batch: int, num_tokens: int, frame_tokens: int, device=None) -> torch.Tensor:
    """(B, N_video, 1): 1 on the first latent frame's ``frame_tokens`` tokens, 0 on later frames and on appended
    (reference) tokens. Lightricks' ltx-core marks the first latent frame so at every inference step whatever the
    condition; training and our inference mark it the same way (ltx-trainer passes no mask, diffusers' plain
    ``LTX2Pipeline`` neither: both then run 2.5 without its embedding)."""
    mask = torch.zeros(batch, num_tokens, 1, device=device)
    mask[:, :frame_tokens] = 1.0
    return mask


def transformer_kwargs(
    video: VideoTokens,
    audio: AudioTokens,
    context,
    sample_sigma: torch.Tensor,
    *,
    use_cross_timestep: bool,
    device,
    isolate_modalities: bool = False,
    keyframes: bool = False,
) -> dict:
    """``sample_sigma`` (B,) is the video's noise level, which drives the audio-video cross-attention
    modulation (``sigma``/``audio_sigma``); ``context`` holds the connectors' video/audio text context (or the
    projected text: :func:`text_kwargs`).
    ``isolate_modalities``: no audio-video cross-attention (a video-only step: the audio tokens then reach
    nothing of the video). ``keyframes`` (LTX-2.5): the first latent frame is marked (:func:`keyframes_mask`)."""
    marks = {}
    if keyframes:
        batch, num_tokens = video.tokens.shape[:2]
        marks["video_keyframes_mask"] = keyframes_mask(batch, num_tokens, video.height * video.width, device)
    scaled = lambda t: (t * TIMESTEP_SCALE).to(device)  # noqa: E731
    return dict(
        hidden_states=video.tokens.to(device),
        audio_hidden_states=audio.tokens.to(device),
        **text_kwargs(context),
        timestep=scaled(video.sigma),
        audio_timestep=scaled(audio.sigma),
        sigma=scaled(sample_sigma),
        audio_sigma=scaled(audio.sigma),
        num_frames=video.frames,
        height=video.height,
        width=video.width,
        fps=video.fps,
        audio_num_frames=audio.tokens.shape[1],
        use_cross_timestep=use_cross_timestep,
        isolate_modalities=isolate_modalities,
        return_dict=False,
        **({} if video.coords is None else {"video_coords": video.coords.to(device)}),
        **marks,
    )


def text_kwargs(context) -> dict:
    """The text part of the call: the connectors' context (``TextContext``), or -- when the connectors are trained
    with the transformer (``models/trained.py``) -- the projected text they run on in the trained module's forward.
    The connectors' mask is all ones, which ``connect_text`` gives as None: no bias in either text cross-attention."""
    if isinstance(context, ProjectedText):
        return dict(text_video=context.video, text_audio=context.audio, text_attention_mask=context.attention_mask)
    return dict(
        encoder_hidden_states=context.video,
        audio_encoder_hidden_states=context.audio,
        encoder_attention_mask=context.attention_mask,
        audio_encoder_attention_mask=context.attention_mask,
    )


def text_length(model_kwargs: dict) -> int:
    """The text tokens of a call made by :func:`transformer_kwargs` (the context's, or the projected text's)."""
    text = model_kwargs.get("encoder_hidden_states", model_kwargs.get("text_video"))
    return text.shape[1]


@contextmanager
def call_hook(transformer: torch.nn.Module, hook):
    """While active, ``hook(kwargs)`` edits the keyword arguments of every forward of ``transformer`` (how a
    diffusers pipeline's transformer call is changed without forking the pipeline)."""

    def pre_hook(module, args, kwargs):
        hook(kwargs)
        return args, kwargs

    handle = transformer.register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def first_frame_marked(transformer: torch.nn.Module):
    """While active, every forward of an LTX-2.5 ``transformer`` that is given no ``video_keyframes_mask`` (diffusers'
    pipelines pass none) gets the first latent frame marked, as in training; other versions are left alone."""
    if not uses_keyframes(transformer.config):
        yield
        return

    def mark(kwargs):
        if kwargs.get("video_keyframes_mask") is None:
            tokens = kwargs["hidden_states"]
            kwargs["video_keyframes_mask"] = keyframes_mask(
                tokens.shape[0], tokens.shape[1], kwargs["height"] * kwargs["width"], tokens.device
            )

    with call_hook(transformer, mark):
        yield
