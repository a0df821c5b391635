"""``ltx2train export``: a checkpoint's (or any) LoRA -> a chosen format, modality and dtype.

Formats (see :mod:`ltx2train.lora.files`): ``official`` (default; alpha folded, what every consumer
applies alike), ``diffusers`` (``transformer.``-prefixed diffusers names, for ``load_lora_weights``),
``official-alpha`` (``.alpha`` tensors kept, for tools that want them).

Modality: ``video`` keeps the modules that act on the video stream (and, by default, ``audio_to_video_attn``,
which writes into it), ``audio`` the audio stream's (and ``video_to_audio_attn``); ``--cross-modal none|all``
changes what goes with them. A video-only LoRA keeps the look without the voice; the base model's streams
still talk through the cross-modal attentions, so the sound follows the new picture as it would in the base.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ltx2train.lora.files import (
    LoraFile,
    is_connector_module,
    module_stream,
    read_lora,
    save_lora,
    select_streams,
    streams_for,
    without_connectors,
)
from ltx2train.utils.errors import UserError

# Consumers that load connector LoRA weights: only ComfyUI (and ltx2train). diffusers routes them to the
# transformer and leaves them unapplied; ltx-core and DiffSynth match no module for them.
CONNECTOR_WARNING = (
    "{n} LoRA module(s) on the text connectors ({example}, ...): ComfyUI and ltx2train apply them, "
    "diffusers, ltx-core and DiffSynth ignore them (--drop-connectors leaves them out)"
)


@dataclass
class ExportResult:
    path: Path
    modules: int
    dropped: int
    warnings: list[str] = field(default_factory=list)


def prepare_lora(
    lora: LoraFile, *, modality: str = "all", cross_modal: str = "receiving", drop_connectors: bool = False
) -> tuple[LoraFile, list[str]]:
    """The modules kept for ``modality`` (and without connectors if asked), plus warnings for the user."""
    kept = select_streams(lora, streams_for(modality, cross_modal))
    if drop_connectors:
        kept = without_connectors(kept)
    warnings = []
    connectors = [m for m in kept.modules if is_connector_module(m)]
    if connectors:
        warnings.append(CONNECTOR_WARNING.format(n=len(connectors), example=connectors[0]))
    if not kept.modules:
        raise UserError(
            f"no LoRA module is left for modality {modality!r} (cross-modal: {cross_modal}); "
            f"the file's modules act on the streams {sorted({module_stream(m) for m in lora.modules})}"
        )
    kept.metadata.update({"modality": modality, "cross_modal": cross_modal})
    return kept, warnings


def export_lora_file(
    source: str | Path,
    output: str | Path,
    *,
    fmt: str = "official",
    modality: str = "all",
    cross_modal: str = "receiving",
    dtype: torch.dtype | None = None,
    drop_connectors: bool = False,
) -> ExportResult:
    lora = read_lora(source)
    drop = drop_connectors or fmt == "diffusers"
    kept, warnings = prepare_lora(lora, modality=modality, cross_modal=cross_modal, drop_connectors=drop)
    if fmt == "diffusers" and not drop_connectors and any(map(is_connector_module, lora.modules)):
        warnings.append("the diffusers format has no place for connector LoRA modules: they were left out")
    path = save_lora(kept, output, fmt, dtype)
    return ExportResult(path, len(kept.modules), len(lora.modules) - len(kept.modules), warnings)
