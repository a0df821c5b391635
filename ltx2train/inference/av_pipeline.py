"""``LTX2AudioVideoPipeline``: DiffSynth-Studio's LTX-2 call surface on diffusers' LTX-2 pipelines.

A DiffSynth user changes one import::

    from ltx2train.inference.av_pipeline import LTX2AudioVideoPipeline, ModelConfig, write_video_audio
    pipe = LTX2AudioVideoPipeline.from_pretrained("models/LTX-2", "models/gemma-3-12b-it-qat-q4_0-unquantized",
                                                  stage2_lora="models/ltx-2-19b-distilled-lora-384.safetensors")
    video, audio = pipe("a cat plays the piano", seed=0, use_two_stage_pipeline=True)
    write_video_audio(video, audio, "out.mp4", fps=24, audio_sample_rate=pipe.audio_sample_rate)

or DiffSynth's own call, unchanged (``ModelConfig`` from this module; the files must be on disk)::

    pipe = LTX2AudioVideoPipeline.from_pretrained(torch_dtype=torch.bfloat16, device="cuda", model_configs=[
        ModelConfig(model_id="google/gemma-3-12b-it-qat-q4_0-unquantized", origin_file_pattern="model-*.safetensors"),
        ModelConfig(model_id="DiffSynth-Studio/LTX-2-Repackage", origin_file_pattern="transformer.safetensors"), ...],
        tokenizer_config=ModelConfig(model_id="google/gemma-3-12b-it-qat-q4_0-unquantized"),
        stage2_lora_config=ModelConfig(model_id="Lightricks/LTX-2",
                                       origin_file_pattern="ltx-2-19b-distilled-lora-384.safetensors"))

Each denoising stage runs diffusers' ``LTX2Pipeline`` (text to audio+video) or ``LTX2InContextPipeline``
(frame conditions for image-to-video and IC-LoRA reference videos; it is ``LTX2ConditionPipeline`` plus
references) around the same modules, with ``output_type="latent"``; our glue does what diffusers leaves to
the caller: DiffSynth's sigma schedules (:mod:`~ltx2train.inference.schedules`), the ×2 latent upsample
between stages (``LTX2LatentUpsamplePipeline``), the stage-2 LoRA attached only for stage 2, tiled decode.

Outputs, as DiffSynth's: ``video`` is a list of ``num_frames`` RGB ``PIL.Image`` s; ``audio`` a float32 CPU
tensor ``(channels, samples)`` at ``pipe.audio_sample_rate`` (the vocoder's rate: 24 kHz for LTX-2).
Guidance is DiffSynth's: one ``cfg_scale`` for video and audio, no STG, no modality guidance, no rescale.

Over 400 lines: one module on purpose. It is one public class, DiffSynth's call surface. Its argument checks
(``ltx2_inputs.py``), model configs and schedules already live apart.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ltx2train.inference import ltx2_inputs as inputs
from ltx2train.inference.model_configs import ModelConfig
from ltx2train.inference.schedules import STAGE2_SIGMAS, passthrough_scheduler, stage1_sigmas
from ltx2train.models.forward import first_frame_marked
from ltx2train.utils.errors import UserError

__all__ = ["LTX2AudioVideoPipeline", "ModelConfig", "identify_variant", "write_video_audio"]  # ModelConfig: DiffSynth's

STAGE2_ADAPTER = "stage2"
DEFAULT_STAGE2_LORA_STRENGTH = 0.8  # DiffSynth's ``stage2_lora_strength``


class LTX2AudioVideoPipeline:
    """Modules in memory + DiffSynth's ``__call__``. Build it with :meth:`from_pretrained`."""

    def __init__(
        self,
        *,
        transformer,
        connectors,
        video_vae,
        audio_vae,
        vocoder,
        text_encoder,
        family: str,
        upsampler=None,
        stage2_lora=None,
        stage2_lora_strength: float = DEFAULT_STAGE2_LORA_STRENGTH,
        max_sequence_length: int = 1024,
        use_cross_timestep: bool = True,
        video_decoder=None,
        duration_head=None,
    ):
        from ltx2train.inference.live_pipeline import _match_vocoder_input_dtype

        self.transformer, self.connectors = transformer, connectors
        self.video_vae, self.audio_vae, self.vocoder = video_vae, audio_vae, vocoder
        self.video_decoder = video_decoder  # LTX-2.5's diffusion video decoder, if it decodes instead of the VAE
        self.duration_head = duration_head  # LTX-2.5's, for num_frames="auto"
        self.text_encoder, self.upsampler, self.family = text_encoder, upsampler, family
        self.stage2_lora = stage2_lora  # a path or a LoraFile, attached only during stage 2
        self.stage2_lora_strength = stage2_lora_strength
        self.max_sequence_length = max_sequence_length
        # diffusers' default, and what ltx2train trains with (objective.use_cross_timestep)
        self.use_cross_timestep = use_cross_timestep
        _match_vocoder_input_dtype(vocoder)
        from ltx2train.lora.stacking import LoraStack

        self.loras = LoraStack(transformer, connectors, family)  # every LoRA of every call, stage 2's too

    @classmethod
    def from_pretrained(
        cls,
        checkpoint=None,
        text_encoder=None,
        *,
        variant=None,
        upscaler=None,
        stage2_lora=None,
        torch_dtype=torch.bfloat16,
        device=None,
        distilled=False,
        stage2_lora_strength: float = DEFAULT_STAGE2_LORA_STRENGTH,
        max_sequence_length: int = 1024,
        low_vram: bool = False,
        swap_blocks: int | None = None,
        model_configs=None,
        tokenizer_config=None,
        stage2_lora_config=None,
        vram_limit=None,
        video_decoder: str = "conv",
        transformer=None,
    ):
        """Every component from ``checkpoint`` (repackaged directory or official single file) through the project's
        strict loader; Gemma from the ``text_encoder`` directory. ``upscaler``: the x2 spatial upscaler file
        (default: the one beside the checkpoint, if any). ``stage2_lora``: the stage-2 distilled LoRA file.
        ``video_decoder``: ``conv`` (the video VAE's decoder) or ``diffusion`` (LTX-2.5's diffusion video decoder).
        ``transformer``: another transformer than the checkpoint's (a full fine-tune's ``transformer.safetensors``).

        ``low_vram``: the transformer, the text connectors and Gemma stored in FP8 (computed in ``torch_dtype``),
        each filled on the host first, and ``swap_blocks`` transformer blocks (default: all) kept in host memory
        and brought to the device one block ahead of use (``ltx2train.memory``); decode is tiled anyway.

        DiffSynth's form works too: ``model_configs`` / ``tokenizer_config`` / ``stage2_lora_config`` as
        :class:`~ltx2train.inference.model_configs.ModelConfig` lists (files on disk); the transformer's
        ``vram_config`` and ``vram_limit`` (GB) mean what they mean there (:mod:`ltx2train.inference.vram`)."""
        from ltx2train.models.loading import load_component

        if model_configs is not None:
            from ltx2train.inference.model_configs import resolve

            found = resolve(model_configs, tokenizer_config)
            checkpoint, text_encoder, distilled = found["checkpoint"], found["text_encoder"], found["distilled"]
            transformer = transformer or found["transformer"]
            upscaler = upscaler or found["upscaler"]
            if stage2_lora_config is not None:
                stage2_lora = stage2_lora_config.files()[0]
        if checkpoint is None or text_encoder is None:
            raise UserError("from_pretrained: give checkpoint and text_encoder, or DiffSynth's model_configs")
        from ltx2train.models.specs import load_variant
        from ltx2train.models.text_encoder import load_text_encoder

        checkpoint = Path(checkpoint)
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        spec = load_variant(variant or identify_variant(checkpoint, distilled))
        _check_video_decoder(spec, video_decoder)
        parts = _checked_parts(checkpoint, spec, distilled, text_encoder, transformer)
        from ltx2train.inference.vram import low_vram_plan, module_bytes, place, plan_from_configs

        plan = (
            low_vram_plan(swap_blocks)
            if low_vram
            else (plan_from_configs(model_configs, vram_limit) if model_configs is not None else None)
        )
        host = torch.device("cpu") if plan is not None else device

        def load(name, dtype=torch_dtype, path=checkpoint, on=device):
            return load_component(spec, name, path, dtype=dtype, device=on, distilled=distilled, part=parts.get(name))

        if stage2_lora is not None and not Path(stage2_lora).is_file():
            raise FileNotFoundError(f"stage2_lora: {stage2_lora} is not a file")
        modules = dict(
            transformer=load("transformer", on=host, path=Path(transformer or checkpoint)),
            connectors=load("connectors", on=host),
            text_encoder=load_text_encoder(
                text_encoder, dtype=torch_dtype, device=host, max_sequence_length=max_sequence_length
            ),
        )
        decoders = dict(
            video_vae=load("video_vae"),
            audio_vae=load("audio_vae"),
            vocoder=load("vocoder", torch.float32),
            upsampler=_load_upsampler(load, checkpoint, upscaler),
            video_decoder=load("video_diffusion_decoder") if video_decoder == "diffusion" else None,
            duration_head=_load_optional(load, spec, "duration_head"),
        )
        streamed = 0
        if plan is not None:
            others = sum(module_bytes(m) for m in decoders.values() if m is not None)
            streamed = place(modules, plan, torch_dtype, device, swap_blocks, others)
        pipe = cls(
            **modules,
            **decoders,
            family=spec.family,
            stage2_lora=stage2_lora,
            stage2_lora_strength=stage2_lora_strength,
            max_sequence_length=max_sequence_length,
        )
        pipe.streamed_blocks = streamed  # transformer blocks kept in host memory (low VRAM / vram_limit)
        return pipe

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    @property
    def audio_sample_rate(self) -> int:
        """The rate of the returned audio (the vocoder's output rate)."""
        return int(self.vocoder.config.output_sampling_rate)

    @property
    def dit(self) -> torch.nn.Module:
        """The transformer, under DiffSynth's name (``pipe.load_lora(pipe.dit, ...)``)."""
        return self.transformer

    def load_lora(
        self,
        lora,
        scale=None,
        adapter_name: str | None = None,
        *,
        alpha: float | None = None,
        state_dict=None,
        **_diffsynth,
    ) -> str:
        """Attach a LoRA (any dialect: a trained one, an IC-LoRA, a camera-control LoRA) at ``scale`` for every
        stage, beside those already loaded; returns its name (:class:`~ltx2train.lora.stacking.LoraStack`).

        DiffSynth's form works too: ``load_lora(pipe.dit, path | ModelConfig, alpha=1.0)`` (``state_dict=`` instead
        of a file; ``hotload`` and its other switches change nothing here: LoRAs are always separate adapters)."""
        if isinstance(lora, torch.nn.Module):  # DiffSynth: (module, lora config, alpha)
            if lora is not self.transformer:
                raise UserError(
                    "load_lora: LTX-2 LoRAs go on pipe.dit (the transformer); its text-connector "
                    "modules, if any, are applied with it"
                )
            lora, scale = (scale if state_dict is None else state_dict), (1.0 if alpha is None else alpha)
        elif alpha is not None:
            scale = alpha
        if isinstance(lora, ModelConfig):
            lora = lora.files()[0]
        return self._placed(self.loras.load(lora, 1.0 if scale is None else float(scale), adapter_name))

    def _placed(self, name: str) -> str:
        """Adapters on the device: PEFT makes them beside their base layer, which block swap keeps on the host."""
        if getattr(self.transformer, "block_swap", None) is not None:
            for param_name, param in self.transformer.named_parameters():
                if "lora_" in param_name and param.device != self.device:
                    param.data = param.data.to(self.device)
        return name

    def clear_lora(self) -> None:
        """Unload every LoRA: the modules are exactly the base model again."""
        self.loras.clear()

    @torch.no_grad()
    def __call__(
        self,
        prompt,
        negative_prompt="",
        cfg_scale=3.0,
        input_images=None,
        input_images_indexes=[0],  # noqa: B006
        input_images_strength=1.0,
        denoising_strength=1.0,
        seed=None,
        rand_device="cpu",
        height=512,
        width=768,
        num_frames=121,
        frame_rate=24,
        num_inference_steps=40,
        tiled=True,
        tile_size_in_pixels=512,
        tile_overlap_in_pixels=128,
        tile_size_in_frames=128,
        tile_overlap_in_frames=24,
        use_two_stage_pipeline=False,
        use_distilled_pipeline=False,
        in_context_videos=None,
        in_context_downsample_factor=2,
        clear_lora_before_state_two=False,
        progress_bar_cmd=tqdm,
    ):
        """One clip: ``(video, audio)``, see the module docstring. The distilled pipeline uses its fixed 8-step
        schedule (``num_inference_steps`` and ``denoising_strength`` do not apply) and no guidance.
        ``num_frames="auto"``: the prompt's own length, from LTX-2.5's duration head.
        ``clear_lora_before_state_two``: unload every LoRA (an IC-LoRA, say) before stage 2, as DiffSynth does, so
        stage 2 runs with its own LoRA only; they stay unloaded afterwards."""
        if num_frames == "auto":
            num_frames = self._auto_frames(prompt, frame_rate)
        tiles = (tile_size_in_pixels, tile_overlap_in_pixels, tile_size_in_frames, tile_overlap_in_frames)
        mode = inputs.check_call(
            self,
            prompt=prompt,
            cfg_scale=cfg_scale,
            height=height,
            width=width,
            num_frames=num_frames,
            frame_rate=frame_rate,
            num_inference_steps=num_inference_steps,
            denoising_strength=denoising_strength,
            input_images=input_images,
            input_images_indexes=input_images_indexes,
            input_images_strength=input_images_strength,
            in_context_videos=in_context_videos,
            in_context_downsample_factor=in_context_downsample_factor,
            use_two_stage_pipeline=use_two_stage_pipeline,
            use_distilled_pipeline=use_distilled_pipeline,
            tiles=tiles,
            tiled=tiled,
        )
        self._set_tiling(tiled, *tiles)
        generator = None if seed is None else torch.Generator(rand_device).manual_seed(seed)
        cfg = 1.0 if use_distilled_pipeline else float(cfg_scale)
        images = _image_conditions(input_images, input_images_indexes, input_images_strength)
        references = _references(in_context_videos, num_frames)
        run = dict(
            num_frames=num_frames,
            frame_rate=float(frame_rate),
            generator=generator,
            progress_bar_cmd=progress_bar_cmd,
            in_context_downsample_factor=in_context_downsample_factor,
        )
        sigmas = stage1_sigmas(num_inference_steps, denoising_strength, use_distilled_pipeline)
        video_latents, audio_latents = self.denoise(
            self._encode(prompt, negative_prompt if cfg > 1 else None),
            cfg,
            sigmas,
            height=mode.stage1_height,
            width=mode.stage1_width,
            conditions=images,
            references=references,
            **run,
        )
        if mode.two_stage:
            if clear_lora_before_state_two:
                self.clear_lora()
            video_latents, audio_latents = self.refine(
                prompt,
                video_latents,
                audio_latents,
                height=height,
                width=width,
                conditions=images,
                with_lora=not use_distilled_pipeline,
                **run,
            )
        return self.decode(video_latents, audio_latents, seed)

    def denoise(
        self,
        text: dict,
        cfg: float,
        sigmas,
        *,
        height,
        width,
        num_frames,
        frame_rate,
        generator,
        conditions=(),
        references=(),
        in_context_downsample_factor=1,
        latents=None,
        audio_latents=None,
        noise_scale=1.0,
        progress_bar_cmd=tqdm,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One denoising stage through diffusers: latents in the VAEs' units, ``(B, C, F, H, W)`` and
        ``(B, C, L, mel)``. ``latents``/``audio_latents``: a start, noised to ``noise_scale``."""
        conditioned = bool(conditions) or bool(references)
        pipe = self._diffusers_pipeline(conditioned)
        extra = (
            dict(
                conditions=list(conditions) or None,
                reference_conditions=list(references) or None,
                reference_downscale_factor=in_context_downsample_factor,
            )
            if conditioned
            else {}
        )
        with _progress(progress_bar_cmd, len(sigmas)) as on_step, first_frame_marked(self.transformer):
            video, audio = pipe(
                **text,
                **extra,
                height=height,
                width=width,
                num_frames=num_frames,
                frame_rate=frame_rate,
                num_inference_steps=len(sigmas),
                sigmas=list(sigmas),
                guidance_scale=cfg,
                audio_guidance_scale=cfg,
                stg_scale=0.0,
                audio_stg_scale=0.0,
                modality_scale=1.0,
                audio_modality_scale=1.0,
                guidance_rescale=0.0,
                audio_guidance_rescale=0.0,
                spatio_temporal_guidance_blocks=None,
                noise_scale=noise_scale,
                generator=generator,
                latents=latents,
                audio_latents=audio_latents,
                use_cross_timestep=self.use_cross_timestep,
                output_type="latent",
                return_dict=False,
                callback_on_step_end=on_step,
                max_sequence_length=self.max_sequence_length,
            )
        return video, audio

    def refine(self, prompt, video_latents, audio_latents, *, height, width, conditions, with_lora, **run):
        """Stage 2: x2 latent upsample, then the stage-2 schedule at full size (no guidance, no references),
        with the stage-2 LoRA attached for the stage only; image conditions are applied again at full size."""
        from diffusers.pipelines.ltx2 import LTX2LatentUpsamplePipeline

        upsample = LTX2LatentUpsamplePipeline(vae=self.video_vae, latent_upsampler=self.upsampler)
        upsample.set_progress_bar_config(disable=True)
        video_latents = upsample(
            latents=video_latents.to(self.upsampler.dtype),
            latents_normalized=False,
            output_type="latent",
            return_dict=False,
        )[0]
        run.pop("in_context_downsample_factor", None)
        with self._stage2_adapter(with_lora):
            return self.denoise(
                self._encode(prompt, None),
                1.0,
                STAGE2_SIGMAS,
                height=height,
                width=width,
                conditions=conditions,
                latents=video_latents,
                audio_latents=audio_latents,
                noise_scale=STAGE2_SIGMAS[0],
                **run,
            )

    def decode(self, video_latents: torch.Tensor, audio_latents: torch.Tensor, seed: int | None = None):
        """VAE-unit latents -> (list of PIL frames, (channels, samples) float32 CPU audio); ``seed``: the diffusion
        video decoder's noise."""
        from diffusers.video_processor import VideoProcessor

        if self.video_decoder is not None:
            from ltx2train.inference.diffusion_decode import decode_video

            video = decode_video(self.video_decoder, video_latents, seed, output_type="pil")[0]
        else:
            pixels = self.video_vae.decode(video_latents.to(self.video_vae.dtype), None, return_dict=False)[0]
            video = VideoProcessor(vae_scale_factor=inputs.SPATIAL).postprocess_video(pixels, output_type="pil")[0]
        mel = self.audio_vae.decode(audio_latents.to(self.audio_vae.dtype), return_dict=False)[0]
        audio = self.vocoder(mel)[0].float().cpu()  # (channels, samples)
        return video, audio

    def _auto_frames(self, prompt: str, frame_rate: float) -> int:
        from ltx2train.inference.duration import predict_num_frames

        if self.duration_head is None:
            raise UserError(
                "num_frames='auto' needs LTX-2.5's duration head (model_patches/*-duration-head*, or "
                "duration_head.safetensors beside the checkpoint); give a number of frames (8k+1)"
            )
        text = self._encode(prompt, None)
        return predict_num_frames(
            self.duration_head, self.connectors, text["prompt_embeds"], text["prompt_attention_mask"], float(frame_rate)
        )[0]

    def _encode(self, prompt: str, negative_prompt: str | None) -> dict:
        """Gemma hidden states through the project's text encoder (the training cache's text format)."""
        dtype, device = next(self.connectors.parameters()).dtype, self.device
        out = {}
        for key, text in (("", prompt), ("negative_", negative_prompt)):
            if text is None:
                continue
            encoded = self.text_encoder.encode([text], max_sequence_length=self.max_sequence_length)
            out[f"{key}prompt_embeds"] = encoded.hidden_states.to(device, dtype)
            out[f"{key}prompt_attention_mask"] = encoded.attention_mask.to(device)
        return out

    def _diffusers_pipeline(self, conditioned: bool):
        """``LTX2Pipeline`` or ``LTX2InContextPipeline`` around our modules (no copies), pass-through scheduler."""
        from diffusers import LTX2Pipeline
        from diffusers.pipelines.ltx2 import LTX2InContextPipeline

        cls = LTX2InContextPipeline if conditioned else LTX2Pipeline
        pipe = cls(
            scheduler=passthrough_scheduler(),
            vae=self.video_vae,
            audio_vae=self.audio_vae,
            text_encoder=None,
            tokenizer=None,
            connectors=self.connectors,
            transformer=self.transformer,
            vocoder=self.vocoder,
        )
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def _set_tiling(self, tiled: bool, tile, overlap, frames, frame_overlap) -> None:
        from ltx2train.memory.tiling import enable_vae_tiling

        if tiled:
            enable_vae_tiling(self.video_vae, tile, overlap, frames, frame_overlap)
        else:
            self.video_vae.disable_tiling()
            self.video_vae.use_framewise_encoding = self.video_vae.use_framewise_decoding = False

    @contextmanager
    def _stage2_adapter(self, enabled: bool):
        """The stage-2 LoRA beside whatever LoRAs are loaded, for stage 2 only: unloaded afterwards without a
        trace (the stack restores the modules' layers and flags)."""
        if not enabled:
            yield
            return
        name = self._placed(self.loras.load(self.stage2_lora, self.stage2_lora_strength, name=STAGE2_ADAPTER))
        try:
            yield
        finally:
            self.loras.unload(name)


@contextmanager
def _progress(progress_bar_cmd, steps: int):
    """A diffusers step callback that advances ``progress_bar_cmd(range(steps))`` (DiffSynth's progress hook)."""
    ticks = iter(progress_bar_cmd(range(steps)))

    def on_step(pipe, i, t, callback_kwargs):
        next(ticks, None)
        return {}

    try:
        yield on_step
    finally:
        for _ in ticks:  # let a tqdm bar finish and close
            pass


def _image_conditions(input_images, indexes, strength) -> list:
    """Seed frame indexes -> diffusers frame conditions. Index 0 replaces the first latent frame; any other
    index is a keyframe of the latent frame holding that pixel frame, ``1 + (index - 1) // 8`` (DiffSynth's map),
    placed by diffusers at that latent frame's first pixel frame."""
    from diffusers.pipelines.ltx2 import LTX2VideoCondition

    if not input_images:
        return []
    return [
        LTX2VideoCondition(
            frames=inputs.to_pil(image), index=0 if index == 0 else 1 + (index - 1) // 8, strength=float(strength)
        )
        for image, index in zip(input_images, indexes)
    ]


def _references(in_context_videos, num_frames) -> list:
    """IC-LoRA reference videos as diffusers reference conditions (fully clean tokens: timestep 0)."""
    from diffusers.pipelines.ltx2 import LTX2ReferenceCondition

    return [
        LTX2ReferenceCondition(frames=inputs.in_context_frames(video, num_frames), strength=1.0)
        for video in in_context_videos or ()
    ]


def _check_video_decoder(spec, video_decoder: str) -> None:
    choices = ("conv", "diffusion") if spec.has("video_diffusion_decoder") else ("conv",)
    if video_decoder not in choices:
        raise UserError(
            f"video_decoder={video_decoder!r}: {spec.name} ({spec.version}) decodes with "
            f"{' or '.join(map(repr, choices))}" + ("" if len(choices) > 1 else " (LTX-2.5 has a diffusion decoder)")
        )


def _checked_parts(checkpoint: Path, spec, distilled: bool, text_encoder, transformer) -> dict[str, str]:
    """The VAE halves to load -- the decoders; an encoder only if its file is there (DiffSynth's lists often have
    none: encoding an image or a reference without it names the file) -- once the files are ``spec``'s version."""
    from ltx2train.models.loading import present_half
    from ltx2train.models.version import check_version

    parts = {vae: "decoder" for vae in ("video_vae", "audio_vae") if present_half(checkpoint, vae) is not None}
    check_version(
        checkpoint,
        spec,
        ["transformer", "connectors", "video_vae", "audio_vae", "vocoder"],
        distilled=distilled,
        text_encoder=text_encoder,
        parts=parts,
    )
    if transformer is not None:
        check_version(Path(transformer), spec, ["transformer"])
    return parts


def _load_optional(load, spec, component: str):
    """A component the variant has and the checkpoint may lack (LTX-2.5's duration head): None where it is not."""
    if not spec.has(component):
        return None
    try:
        return load(component)
    except FileNotFoundError:
        return None


def _load_upsampler(load, checkpoint: Path, upscaler):
    """The x2 spatial upscaler: the given path, else the file beside the checkpoint; None if there is none."""
    if upscaler is not None:
        return load("spatial_upsampler", path=Path(upscaler))
    try:
        return load("spatial_upsampler", path=checkpoint if checkpoint.is_dir() else checkpoint.parent)
    except FileNotFoundError:
        return None


def identify_variant(checkpoint, distilled: bool = False) -> str:
    """The shipped variant whose transformer keys and shapes the checkpoint holds (header read only)."""
    from ltx2train.models.version import detect_checkpoint

    found = detect_checkpoint(checkpoint, distilled)
    if found.variant is None:
        raise UserError(
            f"variant: {checkpoint} matches no shipped variant (closest: {found.closest}, "
            f"{found.version}); pass variant=NAME or a variant JSON file"
        )
    return found.variant


def write_video_audio(video, audio, path, fps, audio_sample_rate) -> Path:
    """mp4 with h264 video and AAC audio; ``video``: PIL frames or an (F, H, W, 3) array (uint8, or float in
    [0, 1]); ``audio``: ``(channels, samples)`` in [-1, 1] or None. Written to a temp name, then renamed."""
    from ltx2train.data.media import write_video_with_audio

    frames = np.stack([inputs.to_rgb_array(frame, f"video[{i}]") for i, frame in enumerate(video)])
    if audio is not None:
        audio = torch.as_tensor(audio).detach().float().cpu().clamp(-1.0, 1.0)
        audio = (audio if audio.ndim == 2 else audio.reshape(1, -1)).numpy()
    return write_video_with_audio(path, frames, fps, audio, audio_sample_rate)
