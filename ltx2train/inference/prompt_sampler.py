"""Prompts -> clips through the inference pipeline around modules already in memory: what validation during
training and ``ltx2train sample`` both run, so a checkpoint reloaded by ``sample`` reproduces validation.

No second copy of the base weights: ``LTX2Pipeline`` is assembled from the transformer being trained (with
its adapter), the frozen connectors, VAEs and vocoder already in memory. Prompts are encoded once, before
training, so Gemma does not stay resident. Train/eval mode, ``requires_grad`` flags, LoRA scales and PEFT's input
casts are captured before sampling and restored exactly afterwards.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from ltx2train.config import ValidationConfig
from ltx2train.inference.live_pipeline import GeneratedClip, build_pipeline, condition_kwargs, generate, write_clip
from ltx2train.lora.adapters import set_adapter_input_cast
from ltx2train.memory.tiling import fit_decode_tiles
from ltx2train.utils.progress import progress


@dataclass
class EncodedPrompts:
    prompts: list[str]
    hidden_states: torch.Tensor  # (P, T, D) stacked Gemma hidden states
    attention_mask: torch.Tensor  # (P, T)
    negative_hidden_states: torch.Tensor  # (1, T, D)
    negative_attention_mask: torch.Tensor  # (1, T)


def encode_prompts(text_encoder, prompts: list[str], negative_prompt: str, max_sequence_length: int) -> EncodedPrompts:
    positive = text_encoder.encode(list(prompts), max_sequence_length=max_sequence_length)
    negative = text_encoder.encode([negative_prompt], max_sequence_length=max_sequence_length)
    return EncodedPrompts(
        list(prompts),
        positive.hidden_states.cpu(),
        positive.attention_mask.cpu(),
        negative.hidden_states.cpu(),
        negative.attention_mask.cpu(),
    )


@contextmanager
def preserved_training_state(*modules: torch.nn.Module):
    """Put ``modules`` in eval mode for sampling, with PEFT's input cast on (the pipelines run without autocast: a
    float32 adapter needs a float32 input; training may turn it off, ``casts_adapter_inputs``); restore modes, input
    casts, grad flags and LoRA scales afterwards."""
    modes = [{name: m.training for name, m in module.named_modules()} for module in modules]
    grads = [{name: p.requires_grad for name, p in module.named_parameters()} for module in modules]
    scales = [
        {name: dict(m.scaling) for name, m in module.named_modules() if isinstance(getattr(m, "scaling", None), dict)}
        for module in modules
    ]
    flag = "cast_input_dtype_enabled"  # PEFT's, on each adapted layer
    casts = [{name: getattr(m, flag) for name, m in module.named_modules() if hasattr(m, flag)} for module in modules]
    try:
        for module in modules:
            module.eval()
            set_adapter_input_cast(module, True)
        yield
    finally:
        for module, mode, grad, scale, cast in zip(modules, modes, grads, scales, casts):
            for name, m in module.named_modules():
                m.training = mode[name]
                if name in scale:
                    m.scaling.clear()
                    m.scaling.update(scale[name])
                if name in cast:
                    setattr(m, flag, cast[name])
            for name, p in module.named_parameters():
                p.requires_grad_(grad[name])


def read_image(i: int, path):
    """``validation.images[i]`` as an RGB PIL image; a file that cannot be read is named with its key."""
    from PIL import Image

    from ltx2train.data.media import MediaError

    try:
        return Image.open(path).convert("RGB")
    except OSError as exc:
        raise MediaError(f"validation.images[{i}]: cannot read {path} ({exc})") from None


def read_reference(i: int, path, validation_cfg: ValidationConfig) -> list:
    """``validation.reference_videos[i]`` over the sample's frames at its fps, as RGB PIL frames."""
    from PIL import Image

    from ltx2train.data.media import MediaError, read_video_frames

    try:
        frames = read_video_frames(path, validation_cfg.num_frames, validation_cfg.fps)
    except (MediaError, OSError) as exc:
        raise MediaError(f"validation.reference_videos[{i}]: {exc}") from None
    return [Image.fromarray(frame) for frame in frames.numpy()]


def read_conditions(validation_cfg: ValidationConfig, reference_downscale: int = 1) -> list[dict]:
    """Per validation prompt, the pipeline arguments of what it is conditioned on besides the text
    (``validation.images``: the first frame; ``validation.reference_videos``: read over the sample's frames at its
    fps), read once."""
    from ltx2train.data.media import MediaError

    conditions = [{} for _ in validation_cfg.prompts]
    for i, path in enumerate(validation_cfg.images):
        conditions[i] = condition_kwargs(image=read_image(i, path))
    for i, path in enumerate(validation_cfg.reference_videos):
        reference = read_reference(i, path, validation_cfg)
        conditions[i] = {
            **conditions[i],
            **condition_kwargs(reference=reference, reference_downscale=reference_downscale),
        }
    for key, paths in (("given_audio", validation_cfg.audios), ("given_video", validation_cfg.videos)):
        for i, path in enumerate(paths):  # encoded by the sampler, which holds the VAEs
            if not Path(path).is_file():
                raise MediaError(f"validation.{key[6:]}s[{i}]: {path} does not exist")
            conditions[i][key] = Path(path)
    return conditions


def encode_given(conditions: list[dict], validation_cfg: ValidationConfig, video_vae, audio_vae) -> list[dict]:
    """The given audio / video files of :func:`read_conditions` as their clean tokens at the sample's size."""
    from ltx2train.inference.given import encode_given_audio, encode_given_video

    encoded = []
    for c in conditions:
        c = dict(c)
        if isinstance(c.get("given_audio"), Path):
            c["given_audio"] = encode_given_audio(
                audio_vae, c["given_audio"], validation_cfg.num_frames, validation_cfg.fps
            )
        if isinstance(c.get("given_video"), Path):
            c["given_video"] = encode_given_video(
                video_vae,
                c["given_video"],
                validation_cfg.height,
                validation_cfg.width,
                validation_cfg.num_frames,
                validation_cfg.fps,
            )
        encoded.append(c)
    return encoded


def decoder_components(validation_cfg: ValidationConfig) -> list[str]:
    """The components that turn a sample's latents into its clip, for ``validation_cfg``."""
    return ["video_vae", "audio_vae", "vocoder"] + (
        ["video_diffusion_decoder"] if validation_cfg.video_decoder == "diffusion" else []
    )


def sampling_parts(validation_cfg: ValidationConfig) -> dict[str, str]:
    """The VAE halves sampling ``validation_cfg`` needs: the decoders only, unless a condition is encoded
    (an image or a reference / given video: the video encoder; given audio: the audio encoder)."""
    parts = {}
    if not (validation_cfg.images or validation_cfg.reference_videos or validation_cfg.videos):
        parts["video_vae"] = "decoder"
    if not validation_cfg.audios:
        parts["audio_vae"] = "decoder"
    return parts


def build_sampler(
    validation_cfg: ValidationConfig,
    prompts: EncodedPrompts,
    load,
    *,
    samples_dir,
    conditions,
    num_frames: list[int] | None = None,
) -> "PromptSampler":
    """A :class:`PromptSampler` with its decoders from ``load(component, dtype=None, part=None)`` (the vocoder in
    float32; of a VAE the half :func:`sampling_parts` names)."""
    parts = sampling_parts(validation_cfg)
    return PromptSampler(
        validation_cfg,
        prompts,
        video_vae=load("video_vae", part=parts.get("video_vae")),
        audio_vae=load("audio_vae", part=parts.get("audio_vae")),
        vocoder=load("vocoder", torch.float32),
        samples_dir=samples_dir,
        conditions=conditions,
        video_decoder=load("video_diffusion_decoder") if validation_cfg.video_decoder == "diffusion" else None,
        num_frames=num_frames,
    )


class PromptSampler:
    """``conditions``: per prompt, :func:`read_conditions`' pipeline arguments (empty: text only)."""

    def __init__(
        self,
        validation_cfg: ValidationConfig,
        prompts: EncodedPrompts,
        *,
        video_vae,
        audio_vae,
        vocoder,
        samples_dir: str | Path,
        conditions: list[dict] | None = None,
        video_decoder: torch.nn.Module | None = None,
        num_frames: list[int] | None = None,
    ):
        self.cfg = validation_cfg
        self.prompts = prompts
        self.video_vae, self.audio_vae, self.vocoder = video_vae, audio_vae, vocoder
        self.video_decoder = video_decoder  # LTX-2.5's diffusion video decoder (validation.video_decoder=diffusion)
        self.num_frames = list(num_frames or [validation_cfg.num_frames] * len(prompts.prompts))  # per prompt
        self.samples_dir = Path(samples_dir)
        self.conditions = encode_given(
            conditions or [{} for _ in prompts.prompts], validation_cfg, video_vae, audio_vae
        )

    def _conditioned(self, i: int) -> bool:
        """Prompt ``i`` needs ``LTX2InContextPipeline`` (an image or a reference video)."""
        return bool(set(self.conditions[i]) - {"given_audio", "given_video"})

    def sample(self, transformer: torch.nn.Module, connectors: torch.nn.Module) -> list[GeneratedClip]:
        cfg = self.cfg
        pipes = {
            conditioned: build_pipeline(
                transformer=transformer,
                connectors=connectors,
                video_vae=self.video_vae,
                audio_vae=self.audio_vae,
                vocoder=self.vocoder,
                conditioned=conditioned,
            )
            for conditioned in {self._conditioned(i) for i in range(len(self.conditions))}
        }
        clips = []
        fit_decode_tiles(self.video_vae, cfg.height, cfg.width)
        with preserved_training_state(transformer, connectors):
            for i in progress(range(len(self.prompts.prompts)), desc="sample", unit="clip"):
                clips.append(
                    generate(
                        pipes[self._conditioned(i)],
                        self.prompts.hidden_states[i : i + 1],
                        self.prompts.attention_mask[i : i + 1],
                        negative_prompt_embeds=self.prompts.negative_hidden_states,
                        negative_prompt_attention_mask=self.prompts.negative_attention_mask,
                        seed=cfg.seed,
                        height=cfg.height,
                        width=cfg.width,
                        num_frames=self.num_frames[i],
                        fps=cfg.fps,
                        steps=cfg.steps,
                        guidance_scale=cfg.guidance_scale,
                        audio_guidance_scale=cfg.audio_guidance_scale,
                        stg_scale=cfg.stg_scale,
                        stg_blocks=list(cfg.stg_blocks),
                        modality_scale=cfg.modality_scale,
                        guidance_rescale=cfg.guidance_rescale,
                        conditions=self.conditions[i],
                        video_decoder=self.video_decoder,
                    )
                )
        return clips

    def run(
        self, step: int, transformer: torch.nn.Module, connectors: torch.nn.Module
    ) -> tuple[list[Path], list[GeneratedClip]]:
        clips = self.sample(transformer, connectors)
        paths = [write_clip(clip, self.samples_dir / f"step_{step:06d}_prompt{i}.mp4") for i, clip in enumerate(clips)]
        return paths, clips
