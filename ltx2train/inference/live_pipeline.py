"""The inference pipeline users run (diffusers ``LTX2Pipeline``), built from modules already in memory.

Validation during training and ``ltx2train sample`` both go through ``build_pipeline`` and ``generate``:
the same scheduler, the same call arguments, the same media writer. Prompts arrive as Gemma hidden states
(the cache's text format), so a training run can encode its validation prompts once and free Gemma.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ltx2train.inference.given import decode_audio_tokens, given_modality, keep_video
from ltx2train.models.forward import first_frame_marked
from ltx2train.utils.errors import UserError


@dataclass
class GeneratedClip:
    video: np.ndarray  # (F, H, W, 3) float32 in [0, 1]
    audio: torch.Tensor  # (channels, samples) float32 at ``sample_rate``
    sample_rate: int
    fps: float


def build_scheduler():
    """The LTX-2 flow-matching scheduler (token-count-dependent shift, terminal sigma 0.1)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, shift_terminal=0.1)


def build_pipeline(
    *,
    transformer,
    connectors,
    video_vae,
    audio_vae,
    vocoder,
    text_encoder=None,
    tokenizer=None,
    conditioned: bool = False,
):
    """``LTX2Pipeline`` around existing modules: no weights are copied or reloaded. ``conditioned``: diffusers'
    ``LTX2InContextPipeline`` (``LTX2ConditionPipeline`` plus IC-LoRA references), for samples conditioned on an
    image or a reference video."""
    from diffusers import LTX2Pipeline
    from diffusers.pipelines.ltx2 import LTX2InContextPipeline

    pipe = (LTX2InContextPipeline if conditioned else LTX2Pipeline)(
        scheduler=build_scheduler(),
        vae=video_vae,
        audio_vae=audio_vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        connectors=connectors,
        transformer=transformer,
        vocoder=vocoder,
    )
    pipe.set_progress_bar_config(disable=True)
    _match_vocoder_input_dtype(vocoder)
    return pipe


def _match_vocoder_input_dtype(vocoder: torch.nn.Module) -> None:
    """The vocoder may run in float32 under a bf16 audio VAE: cast its input mel with a hook, not a fork."""
    if getattr(vocoder, "_ltx2train_dtype_hook", False):
        return

    def cast(module, args):
        dtype = next(module.parameters()).dtype
        return tuple(a.to(dtype) if torch.is_tensor(a) and a.is_floating_point() else a for a in args)

    vocoder.register_forward_pre_hook(cast)
    vocoder._ltx2train_dtype_hook = True


@torch.no_grad()
def generate(
    pipe,
    prompt_embeds: torch.Tensor,
    prompt_attention_mask: torch.Tensor,
    *,
    negative_prompt_embeds: torch.Tensor | None = None,
    negative_prompt_attention_mask: torch.Tensor | None = None,
    seed: int = 42,
    height: int = 512,
    width: int = 768,
    num_frames: int = 121,
    fps: float = 24.0,
    steps: int = 30,
    guidance_scale: float = 3.0,
    audio_guidance_scale: float = 7.0,
    stg_scale: float = 1.0,
    stg_blocks: list[int] | None = (29,),
    modality_scale: float = 3.0,
    guidance_rescale: float = 0.7,
    conditions: dict | None = None,
    video_decoder: torch.nn.Module | None = None,
) -> GeneratedClip:
    """One clip from Gemma hidden states ``(1, T, D)`` with a fixed seed (CPU generator: device-independent).
    ``conditions``: :func:`condition_kwargs` for a ``conditioned`` pipeline (first frame, reference video), and
    ``given_video`` / ``given_audio`` clean tokens (v2a / a2v, ``inference/given.py``). ``video_decoder``: LTX-2.5's
    diffusion video decoder instead of the VAE's (``inference/diffusion_decode.py``).

    Guidance defaults are ``LTX2Pipeline``'s (STG on block 29, LTX-2 19B's recommendation).
    """
    device = next(pipe.transformer.parameters()).device
    dtype = next(pipe.connectors.parameters()).dtype
    kwargs = {}
    if guidance_scale > 1.0 or audio_guidance_scale > 1.0:
        if negative_prompt_embeds is None:
            raise ValueError("classifier-free guidance (a guidance scale > 1) needs negative prompt embeddings")
        kwargs = dict(
            negative_prompt_embeds=negative_prompt_embeds.to(device, dtype),
            negative_prompt_attention_mask=negative_prompt_attention_mask.to(device),
        )
    conditions = dict(conditions or {})
    given_video, given_audio = conditions.pop("given_video", None), conditions.pop("given_audio", None)
    if given_video is not None:
        conditions["callback_on_step_end"] = keep_video(given_video)
    _check_stg(pipe, stg_scale, stg_blocks)
    with given_modality(pipe.transformer, video=given_video, audio=given_audio), first_frame_marked(pipe.transformer):
        video, audio = _call(
            pipe,
            prompt_embeds.to(device, dtype),
            prompt_attention_mask.to(device),
            kwargs,
            conditions,
            height=height,
            width=width,
            num_frames=num_frames,
            fps=fps,
            steps=steps,
            guidance_scale=guidance_scale,
            audio_guidance_scale=audio_guidance_scale,
            stg_scale=stg_scale,
            stg_blocks=stg_blocks,
            modality_scale=modality_scale,
            guidance_rescale=guidance_rescale,
            seed=seed,
            latents_out=video_decoder is not None,
        )
    if video_decoder is not None:
        video, audio = _decode_latents(pipe, video_decoder, video, audio, seed)
    audio = audio[0].float().cpu()
    if given_audio is not None:  # what the given tokens sound like, decoded as the pipeline decodes its own
        audio = decode_audio_tokens(pipe.audio_vae, pipe.vocoder, given_audio)
    return GeneratedClip(
        video=np.asarray(video[0], dtype=np.float32),
        audio=audio,
        sample_rate=int(pipe.vocoder.config.output_sampling_rate),
        fps=fps,
    )


def _check_stg(pipe, stg_scale: float, stg_blocks) -> None:
    if stg_scale > 0:
        num_layers = pipe.transformer.config.num_layers
        bad = [b for b in stg_blocks or () if not 0 <= b < num_layers]
        if bad or not stg_blocks:
            raise UserError(
                f"STG blocks {list(stg_blocks or [])} are not blocks of this {num_layers}-block transformer"
            )


def _decode_latents(pipe, video_decoder, video_latents, audio_latents, seed: int):
    """The pipeline's own decode of its latents, the video through ``video_decoder``: (np video, waveforms)."""
    from ltx2train.inference.diffusion_decode import decode_video

    video = decode_video(video_decoder, video_latents, seed)
    mel = pipe.audio_vae.decode(audio_latents.to(pipe.audio_vae.dtype), return_dict=False)[0]
    return video, pipe.vocoder(mel)


def _call(
    pipe,
    prompt_embeds,
    prompt_attention_mask,
    kwargs,
    conditions,
    *,
    height,
    width,
    num_frames,
    fps,
    steps,
    guidance_scale,
    audio_guidance_scale,
    stg_scale,
    stg_blocks,
    modality_scale,
    guidance_rescale,
    seed,
    latents_out: bool = False,
):
    """The diffusers pipeline call of :func:`generate` (np video, waveform audio; ``latents_out``: both as the
    denormalized latents the pipeline would decode)."""
    return pipe(
        prompt_embeds=prompt_embeds,
        prompt_attention_mask=prompt_attention_mask,
        height=height,
        width=width,
        num_frames=num_frames,
        frame_rate=fps,
        num_inference_steps=steps,
        guidance_scale=guidance_scale,
        audio_guidance_scale=audio_guidance_scale,
        stg_scale=stg_scale,
        audio_stg_scale=stg_scale,
        spatio_temporal_guidance_blocks=list(stg_blocks or []) or None,
        modality_scale=modality_scale,
        audio_modality_scale=modality_scale,
        guidance_rescale=guidance_rescale,
        audio_guidance_rescale=guidance_rescale,
        generator=torch.Generator().manual_seed(seed),
        output_type="latent" if latents_out else "np",
        return_dict=False,
        **kwargs,
        **conditions,
    )


def condition_kwargs(image=None, reference=None, reference_downscale: int = 1) -> dict:
    """``LTX2InContextPipeline`` arguments for a first-frame ``image`` (PIL; i2av: latent frame 0 given clean)
    and a ``reference`` video (PIL frames; IC-LoRA: clean tokens at 1 / ``reference_downscale`` of the size)."""
    from diffusers.pipelines.ltx2 import LTX2ReferenceCondition, LTX2VideoCondition

    kwargs = {}
    if image is not None:
        kwargs["conditions"] = [LTX2VideoCondition(frames=image, index=0, strength=1.0)]
    if reference is not None:
        kwargs["reference_conditions"] = [LTX2ReferenceCondition(frames=reference, strength=1.0)]
        kwargs["reference_downscale_factor"] = reference_downscale
    return kwargs


def write_clip(clip: GeneratedClip, path: str | Path) -> Path:
    """mp4 with h264 video and AAC audio at the vocoder's rate, written to a temp name then renamed."""
    from ltx2train.data.media import write_video_with_audio

    frames = (np.clip(clip.video, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    audio = clip.audio.clamp(-1.0, 1.0).numpy()
    return write_video_with_audio(path, frames, clip.fps, audio, clip.sample_rate)
