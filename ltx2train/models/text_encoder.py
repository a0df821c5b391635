"""Gemma text encoding (Gemma 3 for LTX-2 and 2.3, LTX's Gemma 4 for 2.5): prompts -> stacked hidden states -> projected features -> video/audio context.

``LTX2TextConnectors`` does two things: a frozen *feature extractor* (per-layer normalisation of the
stacked Gemma states ``(B, T, hidden * (layers + 1))`` and the ``text_proj_in`` projection; in the original
checkpoints ``text_embedding_projection.*``, outside ``diffusion_model``) and the *connectors* proper (the
1-D transformers that LoRAs may target). ``project_text`` and ``connect_text`` are the two halves: the
cache stores the projected features (3840 values per token for LTX-2 19B instead of 49 x 3840), and the
connectors run in the training step. Together they equal ``connectors(...)`` exactly (tested); diffusers
has no such split, which is the gap these two functions fill.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ltx2train.utils.errors import UserError

# LTX-2 pads Gemma prompts on the left and uses a fixed token budget.
DEFAULT_MAX_SEQUENCE_LENGTH = 1024


@dataclass
class TextEmbeddings:
    hidden_states: torch.Tensor  # (B, T, hidden * num_stacked_layers), stacked layers flattened last
    attention_mask: torch.Tensor  # (B, T), 1 for real tokens, 0 for padding


@dataclass
class TextContext:
    video: torch.Tensor  # (B, T, video cross-attention dim)
    audio: torch.Tensor  # (B, T, audio cross-attention dim)
    attention_mask: torch.Tensor | None  # (B, T) after the connectors: all ones (``apply_connectors``) or None


class GemmaTextEncoder:
    """A Gemma model (Gemma 3 or 4, the multimodal checkpoint or text-only) with its tokenizer."""

    def __init__(self, model: torch.nn.Module, tokenizer, max_sequence_length: int = DEFAULT_MAX_SEQUENCE_LENGTH):
        self.model = model
        self.tokenizer = tokenizer
        self.max_sequence_length = max_sequence_length
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def num_stacked_layers(self) -> int:
        """Hidden states returned per token: the embeddings plus one per decoder layer."""
        return _text_config(self.model.config).num_hidden_layers + 1

    @torch.no_grad()
    def encode(self, prompts: list[str] | str, max_sequence_length: int | None = None) -> TextEmbeddings:
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        tokens = self.tokenizer(
            [p.strip() for p in prompts],
            padding="max_length",
            max_length=max_sequence_length or self.max_sequence_length,
            truncation=True,
            add_special_tokens=True,
            return_tensors="pt",
        )
        input_ids = tokens.input_ids.to(self.device)
        attention_mask = tokens.attention_mask.to(self.device)
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        stacked = torch.stack(outputs.hidden_states, dim=-1)  # (B, T, hidden, layers + 1)
        return TextEmbeddings(stacked.flatten(2, 3), attention_mask)


# transformers ``model_type`` -> the class loaded: the multimodal checkpoint or its text-only model
GEMMA_CLASSES = {
    "gemma3": "Gemma3ForConditionalGeneration",
    "gemma3_text": "Gemma3TextModel",
    "gemma4_unified": "Gemma4UnifiedForConditionalGeneration",
    "gemma4_unified_text": "Gemma4UnifiedTextModel",
}


def gemma_kind(path: str | Path) -> str | None:
    """The Gemma family of a text-encoder directory (``gemma3``, ``gemma4_unified``; text-only models count as their
    family), from its ``config.json``; None when there is none."""
    import json

    config = Path(path) / "config.json"
    if not config.is_file():
        return None
    model_type = json.loads(config.read_text()).get("model_type", "")
    return model_type.removesuffix("_text")


def _text_config(config):
    return getattr(config, "text_config", None) or config


def load_text_encoder(
    path: str | Path,
    *,
    dtype: torch.dtype = torch.bfloat16,
    device: str | torch.device = "cpu",
    max_sequence_length: int = DEFAULT_MAX_SEQUENCE_LENGTH,
) -> GemmaTextEncoder:
    """Load Gemma 3 and its tokenizer from a local transformers directory (never from a hub).

    Accepts the real ``google/gemma-3-12b-it-qat-q4_0-unquantized`` layout
    (``Gemma3ForConditionalGeneration``) and text-only Gemma 3 checkpoints. Only the language model's
    hidden states are used; the vision tower is loaded as part of the checkpoint but never run.
    """
    import transformers
    from transformers import AutoConfig, AutoTokenizer

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"text encoder: {path} is not a transformers model directory (no config.json)")
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    if config.model_type not in GEMMA_CLASSES:
        raise UserError(
            f"text encoder: {path} holds a {config.model_type!r} model, expected Gemma 3 (LTX-2, 2.3) "
            "or LTX's Gemma 4 (LTX-2.5)"
        )
    cls = getattr(transformers, GEMMA_CLASSES[config.model_type])
    model = cls.from_pretrained(path, torch_dtype=dtype, local_files_only=True, use_safetensors=True)
    model = model.to(device).eval().requires_grad_(False)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return GemmaTextEncoder(model, tokenizer, max_sequence_length)


@dataclass
class ProjectedText:
    video: torch.Tensor  # (B, T, video feature dim): the feature extractor's output for the video connector
    audio: torch.Tensor | None  # (B, T, audio feature dim); None where both share one projection (LTX-2.0)
    attention_mask: torch.Tensor  # (B, T)


@torch.no_grad()
def project_text(
    connectors: torch.nn.Module, embeddings: TextEmbeddings, padding_side: str = "left", scale_factor: int = 8
) -> ProjectedText:
    """The frozen first half of ``LTX2TextConnectors.forward``: normalise the stacked layers, project."""
    from diffusers.pipelines.ltx2.connectors import per_layer_masked_mean_norm, per_token_rms_norm

    cfg = connectors.config
    dtype = next(connectors.parameters()).dtype
    hidden = embeddings.hidden_states.to(dtype).unflatten(2, (cfg.caption_channels, -1))  # (B, T, C, layers)
    mask = embeddings.attention_mask
    if cfg.per_modality_projections:  # LTX-2.3
        normed = per_token_rms_norm(hidden).flatten(2, 3)
        normed = torch.where(mask.bool().unsqueeze(-1), normed, torch.zeros_like(normed))
        video = connectors.video_text_proj_in(normed * math.sqrt(cfg.video_hidden_dim / cfg.caption_channels))
        audio = connectors.audio_text_proj_in(normed * math.sqrt(cfg.audio_hidden_dim / cfg.caption_channels))
        return ProjectedText(video, audio, mask)
    normed = per_layer_masked_mean_norm(
        text_hidden_states=hidden,
        sequence_lengths=mask.sum(dim=-1),
        device=hidden.device,
        padding_side=padding_side,
        scale_factor=scale_factor,
    )
    return ProjectedText(connectors.text_proj_in(normed), None, mask)


def connect_text(connectors: torch.nn.Module, projected: ProjectedText) -> TextContext:
    """The second half of ``LTX2TextConnectors.forward``: the video and audio connector transformers.

    The context's mask is None: diffusers' forward binarises the additive mask the video connector returns with
    ``< 1e-6``, which is all ones whatever the config (all zeros after learned registers replaced the padding, as
    in every shipped variant; 0 or -max without registers), then multiplies the video context by it and the
    transformer turns it into a zero bias for both text cross-attentions of every block. None is exact, needs no
    host sync, and leaves those attentions free for flash kernels (a mask also meets cuDNN attention's backward
    NaN on H100/H200)."""
    video_in = projected.video
    audio_in = projected.audio if projected.audio is not None else projected.video
    dtype = video_in.dtype
    additive = (projected.attention_mask.to(torch.int64) - 1).to(dtype)
    additive = additive.reshape(additive.shape[0], 1, -1, additive.shape[-1]) * torch.finfo(dtype).max
    video, _ = connectors.video_connector(video_in, additive)
    audio, _ = connectors.audio_connector(audio_in, additive)
    return TextContext(video, audio, None)


def apply_connectors(
    connectors: torch.nn.Module, embeddings: TextEmbeddings, padding_side: str = "left"
) -> TextContext:
    """Stacked Gemma hidden states -> video and audio context through ``LTX2TextConnectors``."""
    weight_dtype = next(connectors.parameters()).dtype
    video, audio, mask = connectors(
        embeddings.hidden_states.to(weight_dtype), embeddings.attention_mask, padding_side=padding_side
    )
    return TextContext(video, audio, mask)
