"""A strategy: per-modality roles and conditions (``conditions.py``) applied in order to one step's tokens.

``strategy.name`` picks a preset (:data:`PRESETS`); ``strategy.video`` / ``strategy.audio`` override its roles.
Every strategy also has caption dropout (the cached empty prompt), per-modality loss weights
(``objective.*_loss_weight``) and one shared or two independent noise levels. The loop calls ``inputs`` and
``loss`` and never asks which strategy runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ltx2train.config import ObjectiveConfig
from ltx2train.models.forward import AudioTokens, VideoTokens, pack_audio, pack_video, transformer_kwargs
from ltx2train.training.objective import masked_mse, masked_mse_per_sample, noisy_and_target, sample_sigmas
from ltx2train.training.strategies.conditions import (
    Absent,
    Draws,
    FirstFrame,
    Given,
    ModalityTokens,
    Reference,
    StepState,
)
from ltx2train.training.strategies.tokens import StepInputs, draw_noise
from ltx2train.utils.errors import UserError


@dataclass(frozen=True)
class Preset:
    video: str  # generated | given
    audio: str  # generated | given | none
    first_frame: bool = False
    reference: bool = False


PRESETS = {
    "t2av": Preset("generated", "generated"),
    "t2v": Preset("generated", "none"),
    "i2av": Preset("generated", "generated", first_frame=True),
    "ic_lora": Preset("generated", "none", reference=True),
    "a2v": Preset("generated", "given"),
    "v2a": Preset("given", "generated"),
}
# The modules of the audio branch and of the audio-video cross-attention (diffusers' names): no adapter, and
# frozen under full fine-tuning, while the audio is not run -- nothing would train them (and DDP requires every
# trained parameter to get a gradient).
AUDIO_MODULES = (
    r"(transformer_blocks\.\d+\.(audio_[a-z_0-9]+|video_to_audio_[a-z]+|video_a2v_[a-z_]+)"
    r"|audio_[a-z_]+|av_cross_attn_[a-z_0-9]+)(\..*)?"
)  # module or parameter names


class Strategy:
    def __init__(
        self,
        name: str,
        preset: Preset,
        objective_cfg: ObjectiveConfig,
        fps: float,
        *,
        caption_dropout: float = 0.0,
        first_frame_probability: float = 1.0,
        independent_sigma: bool = False,
        empty_prompt: dict | None = None,
        reference_downscale: int = 0,
        rope=None,
        audio_channels=None,
        keyframes: bool = False,
    ):
        self.name, self.preset, self.cfg, self.fps = name, preset, objective_cfg, fps
        self.keyframes = keyframes  # LTX-2.5: the first latent frame marked for its keyframe embedding
        self.caption_dropout, self.independent_sigma, self.empty_prompt = (
            caption_dropout,
            independent_sigma,
            empty_prompt,
        )
        self.conditions: list = []
        if preset.video == "given":
            self.conditions.append(Given("video"))
        if preset.audio == "given":
            self.conditions.append(Given("audio"))
        if preset.audio == "none":
            self.conditions.append(Absent(audio_channels))
        if preset.first_frame:
            self.conditions.append(FirstFrame(first_frame_probability))
        if preset.reference:
            if rope is None or not reference_downscale:
                raise ValueError(
                    f"the {name} strategy needs the transformer's RoPE and the cache's reference_downscale"
                )
            self.conditions.append(Reference(reference_downscale, rope))
        if caption_dropout > 0 and empty_prompt is None:
            raise UserError("strategy.caption_dropout needs the cache's empty prompt (data.extras: empty_prompt)")

    @property
    def frozen_modules(self) -> str | None:
        """A regex of module names nothing trains under this strategy (PEFT's ``exclude_modules``), or None."""
        return AUDIO_MODULES if self.preset.audio == "none" else None

    def describe(self) -> str:
        p = self.preset
        extra = [
            c
            for c, on in (
                ("first frame given", p.first_frame),
                ("reference video", p.reference),
                (f"caption dropout {self.caption_dropout:g}", self.caption_dropout > 0),
            )
            if on
        ]
        return f"{self.name}: video {p.video}, audio {p.audio}" + "".join(f", {e}" for e in extra)

    # ------------------------------------------------------------------------------------------ inputs
    def inputs(
        self, batch: dict[str, torch.Tensor], context, generator=None, sigma: torch.Tensor | None = None
    ) -> StepInputs:
        """Transformer inputs and targets for ``batch``. ``context``: the connectors' text context, or a function
        of the batch that makes it (needed for caption dropout, which swaps captions first). ``sigma`` (B,) fixes
        the noise levels (the validation loss: no caption dropout, probabilistic conditions always on);
        ``generator``: one, or one per sample (see :func:`draw_noise`)."""
        state, context = self._state(batch, context, generator, sigma)
        for condition in self.conditions:
            condition.apply(state)
        return self._build(state, context)

    def _state(self, batch, context, generator, sigma) -> tuple[StepState, object]:
        training = sigma is None
        video = batch["video_latents"]  # (B, C, F, H, W)
        video_x0 = pack_video(video)
        if self.preset.audio != "none" and "audio_latents" not in batch:
            raise UserError(f"the {self.name} strategy needs audio latents in the cache (data.with_audio: true)")
        audio_x0 = (
            pack_audio(batch["audio_latents"]) if self.preset.audio != "none" else video_x0[:, :1, :1]
        )  # Absent's
        sigma, video_noise, audio_noise = draw_noise(generator, video_x0, audio_x0, self.cfg, sigma)
        draws = Draws(generator, video_x0.shape[0])
        audio_sigma = self._audio_sigma(generator, sigma, video_x0) if training else sigma
        if training and self.caption_dropout > 0:
            batch = self._drop_captions(batch, draws.uniform() < self.caption_dropout)
        if callable(context):
            context = context(batch)
        elif training and self.caption_dropout > 0:
            raise ValueError("caption dropout swaps captions before the connectors: pass the text-context function")
        runs_audio = self.preset.audio != "none"
        audio_mask = (
            batch["audio_valid"].float() if runs_audio and "audio_valid" in batch else torch.ones(audio_x0.shape[:2])
        )
        state = StepState(
            batch,
            ModalityTokens(
                video_x0,
                video_noise,
                sigma[:, None].repeat(1, video_x0.shape[1]),
                torch.ones(video_x0.shape[:2]),
                sigma.clone(),
            ),
            ModalityTokens(
                audio_x0,
                audio_noise,
                audio_sigma[:, None].repeat(1, audio_x0.shape[1]),
                audio_mask,
                audio_sigma.clone(),
            ),
            tuple(video.shape[2:]),
            self.fps,
            draws,
            training,
        )
        return state, context

    def _audio_sigma(self, generator, sigma: torch.Tensor, video_x0: torch.Tensor) -> torch.Tensor:
        """The audio's noise level: the video's, or (``independent_sigma``) its own draw."""
        if not self.independent_sigma:
            return sigma
        if isinstance(generator, (list, tuple)):
            return torch.cat([sample_sigmas(1, video_x0.shape[1], self.cfg, g) for g in generator])
        return sample_sigmas(video_x0.shape[0], video_x0.shape[1], self.cfg, generator)

    def _drop_captions(self, batch: dict, rows: torch.Tensor) -> dict:
        """``batch`` with the captions of ``rows`` replaced by the empty prompt (both left-padded to one length)."""
        if not rows.any():
            return batch
        from ltx2train.data.cache import left_pad

        length = max(batch["text_attention_mask"].shape[1], self.empty_prompt["text_attention_mask"].shape[0])
        batch = dict(batch)
        for key in ("text_video", "text_audio", "text_attention_mask"):
            if key not in batch:
                continue
            values = left_pad(batch[key], length).clone()
            values[rows] = left_pad(self.empty_prompt[key][None], length).to(values.dtype)
            batch[key] = values
        return batch

    def _build(self, state: StepState, context) -> StepInputs:
        video, audio = state.video, state.audio
        frames, height, width = state.grid
        video_in, video_target = noisy_and_target(video.x0, video.noise, video.sigma)
        audio_in, audio_target = noisy_and_target(audio.x0, audio.noise, audio.sigma)
        device = context.video.device
        model_kwargs = transformer_kwargs(
            VideoTokens(video_in, video.sigma, frames, height, width, self.fps, coords=state.video_coords),
            AudioTokens(audio_in, audio.sample_sigma),
            context,
            video.sample_sigma,
            use_cross_timestep=self.cfg.use_cross_timestep,
            device=device,
            isolate_modalities=state.isolate_modalities,
            keyframes=self.keyframes,
        )
        n = frames * height * width  # the clip's own tokens; appended ones are not predicted
        return StepInputs(
            model_kwargs,
            video_target[:, :n].to(device),
            audio_target.to(device),
            video.loss_mask[:, :n].to(device),
            audio.loss_mask.to(device),
            video.sample_sigma if self.preset.video == "generated" else audio.sample_sigma,
        )

    # ------------------------------------------------------------------------------------------ loss
    def loss(self, video_pred: torch.Tensor, audio_pred: torch.Tensor, inputs: StepInputs):
        """The weighted masked MSE of each modality on its generated tokens; given tokens contribute nothing."""
        video_pred = video_pred[:, : inputs.video_target.shape[1]]
        w_video, w_audio = self.cfg.video_loss_weight, self.cfg.audio_loss_weight
        video_loss = masked_mse(video_pred, inputs.video_target, inputs.video_loss_mask)
        audio_loss = masked_mse(audio_pred, inputs.audio_target, inputs.audio_loss_mask)
        per_sample = w_video * masked_mse_per_sample(
            video_pred, inputs.video_target, inputs.video_loss_mask
        ) + w_audio * masked_mse_per_sample(audio_pred, inputs.audio_target, inputs.audio_loss_mask)
        return w_video * video_loss + w_audio * audio_loss, {
            "video_loss": video_loss.detach(),
            "audio_loss": audio_loss.detach(),
            "per_sample": per_sample,
        }
