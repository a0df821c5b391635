"""DiffSynth-Studio's ``ModelConfig`` lists, resolved to the files ltx2train loads, so that a DiffSynth user's
``from_pretrained(model_configs=[...], tokenizer_config=..., stage2_lora_config=...)`` call runs unchanged.

A config names a file by ``path``, or by ``model_id`` + ``origin_file_pattern`` under ``local_model_path``
(default: ``$DIFFSYNTH_MODEL_BASE_PATH`` or ``./models``, as DiffSynth lays out its downloads). Nothing is
downloaded: a file that is not there is an error that says where it was looked for. Files are recognised by
name: the repackaged split files (they must share one directory: ltx2train reads them from it), an official
single file, the x2 spatial upscaler, and Gemma's shards (their directory, which holds the tokenizer too).
DiffSynth's VRAM fields on the transformer's config, with ``vram_limit``, set the pipeline's low-VRAM plan
(:mod:`ltx2train.inference.vram`); ``preparing_*`` change nothing.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ltx2train.models.layout import DISTILLED_TRANSFORMER_FILE, SPLIT_FILES
from ltx2train.utils.errors import UserError


@dataclass
class ModelConfig:
    path: str | list[str] | None = None
    model_id: str | None = None
    origin_file_pattern: str | list[str] | None = None
    local_model_path: str | None = None
    download_source: Any = None  # ignored: nothing is downloaded
    skip_download: Any = None
    offload_device: Any = None  # DiffSynth's VRAM management fields: ignored
    offload_dtype: Any = None
    onload_device: Any = None
    onload_dtype: Any = None
    preparing_device: Any = None
    preparing_dtype: Any = None
    computation_device: Any = None
    computation_dtype: Any = None

    def files(self) -> list[Path]:
        """The files this config names, which must exist."""
        if self.path is not None:
            paths = [Path(p) for p in ([self.path] if isinstance(self.path, (str, Path)) else self.path)]
            missing = [str(p) for p in paths if not p.exists()]
            if missing:
                raise FileNotFoundError(f"ModelConfig(path=...): {', '.join(missing)} not found")
            return paths
        if self.model_id is None:
            raise UserError("ModelConfig: give path= or model_id= (with origin_file_pattern=)")
        root = Path(self.local_model_path or os.environ.get("DIFFSYNTH_MODEL_BASE_PATH") or "./models") / self.model_id
        patterns = self.origin_file_pattern or "*"
        patterns = [patterns] if isinstance(patterns, str) else list(patterns)
        found = sorted({Path(root, f) for p in patterns for f in glob.glob(p.rstrip("/") or "*", root_dir=root)})
        if not found:
            raise FileNotFoundError(
                f"ModelConfig(model_id={self.model_id!r}, origin_file_pattern={self.origin_file_pattern!r}): nothing "
                f"at {root}/{'|'.join(patterns)}. ltx2train does not download: put the files there (or set "
                "DIFFSYNTH_MODEL_BASE_PATH), or pass ModelConfig(path=...)"
            )
        return found


_SPLIT = {f.filename for f in SPLIT_FILES} | {DISTILLED_TRANSFORMER_FILE}
_TRANSFORMERS = {"transformer.safetensors", DISTILLED_TRANSFORMER_FILE}


def resolve(model_configs: list[ModelConfig], tokenizer_config: ModelConfig | None = None) -> dict:
    """{checkpoint, text_encoder, upscaler, distilled, transformer} for ``from_pretrained`` from DiffSynth-style
    configs. A transformer file alone in its directory, beside a repackaged directory, is a fine-tuned one
    (``transformer``: DiffSynth's way of validating a full fine-tune)."""
    split, singles, upscalers, gemma = {}, [], [], set()
    for config in model_configs:
        for path in config.files():
            name = path.name
            if path.is_dir() and (path / "config.json").is_file():
                gemma.add(path)
            elif name in _SPLIT:
                split.setdefault(path.parent, set()).add(name)
            elif "spatial-upscaler" in name:
                upscalers.append(path)
            elif name.startswith("model") and (path.parent / "config.json").is_file():
                gemma.add(path.parent)  # Gemma's shards
            elif name.endswith(".safetensors") and "lora" not in name:
                singles.append(path)  # an official single file (ltx-2-19b-dev.safetensors)
    if tokenizer_config is not None and not gemma:
        gemma.update(p if p.is_dir() else p.parent for p in tokenizer_config.files())
    alone = [d for d, names in split.items() if names <= _TRANSFORMERS]
    override = None
    if len(split) + len(singles) > 1 and len(alone) == 1:
        override = alone[0] / sorted(split.pop(alone[0]))[0]
    transformers = {n for names in split.values() for n in names} & _TRANSFORMERS
    checkpoints = sorted(split) + singles
    if len(checkpoints) != 1:
        raise UserError(
            f"model_configs: found {len(checkpoints)} LTX-2 checkpoints ({[str(c) for c in checkpoints]}); "
            "give the split files of one directory, or one official single file"
        )
    if len(gemma) != 1:
        raise UserError(
            f"model_configs / tokenizer_config: found {len(gemma)} Gemma directories "
            f"({[str(g) for g in gemma]}); give Gemma 3's model-*.safetensors or its directory"
        )
    checkpoint = checkpoints[0]
    distilled = transformers == {DISTILLED_TRANSFORMER_FILE}  # the distilled transformer file named, not the dev one
    return {
        "checkpoint": checkpoint,
        "text_encoder": gemma.pop(),
        "upscaler": upscalers[0] if upscalers else None,
        "distilled": distilled,
        "transformer": override,
    }
