"""Typed training configuration: YAML recipe + ``key=value`` overrides -> validated :class:`Config`.

A *recipe* is a YAML file whose top-level sections mirror :class:`Config` (``model``, ``data``,
``lora``, ``optimizer``, ``objective``, ``train``, ``validation``, ``tracker``).  Every section and
every field is optional in the recipe except the ``MISSING`` ones (model.checkpoint,
model.text_encoder, data.metadata, data.cache_dir, train.output_dir), which must be set either in
the recipe or through an override.  OmegaConf interpolations (``${train.output_dir}/cache``,
``${oc.env:HOME}``) may be used in values.

Loading (:func:`load_config`) goes:

1. parse the YAML (YAML 1.2 booleans: only ``true``/``false`` are booleans, so ``mixed_precision: no``
   is the string ``"no"``; ``1e-4`` is a float);
2. check every key of the recipe and of the overrides against the schema -- an unknown key is an
   error that names the full dotted key and suggests the closest valid one;
3. apply the values onto the OmegaConf structured schema (types are checked and converted there),
   then the overrides, in order, so later ones win;
4. report unset required values, resolve interpolations, make paths absolute (see below);
5. validate values (frame counts, multiples of 32, enumerations, ranges) and, optionally, that
   some paths exist.

Every problem is raised as a :class:`ConfigError` before anything heavy (torch, models) is imported:
this module only imports the standard library, ``yaml`` and ``omegaconf``.

Path resolution (model.checkpoint, model.text_encoder, model.variant when it is a ``.json`` path,
data.metadata, data.root, data.cache_dir, train.output_dir, train.resume when it is a path):

* ``~`` is expanded; absolute paths are kept as they are (normalised);
* a value written in the recipe that starts with ``./`` or ``../`` is relative to the directory of
  the recipe file, so a recipe can refer to files next to it;
* any other relative value (``outputs/run``) -- and every relative value given as a command-line
  override -- is relative to the current working directory.

The loaded :class:`Config` always holds absolute paths, so :func:`save_config` writes a
self-contained, fully resolved YAML that loads back to an equal :class:`Config`.

Override syntax: ``section.field=value``; the value is parsed as YAML (``train.max_steps=10``,
``optimizer.betas=[0.9,0.95]``, ``validation.prompts=[a cat,a dog]``, ``data.root=null``).  For
string fields the text after ``=`` is taken literally (so prompts may contain ``:`` or ``#``) unless
it is ``null``/``~`` (for optional fields) or is quoted.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, List, Optional, Sequence, Union

import yaml
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ltx2train.utils.atomic import write_text_atomic

__all__ = [
    "Config",
    "ConfigError",
    "DataConfig",
    "DistributedConfig",
    "LoRAConfig",
    "ModelConfig",
    "ObjectiveConfig",
    "OptimizerConfig",
    "TrackerConfig",
    "TrainConfig",
    "ValidationConfig",
    "config_to_dict",
    "load_config",
    "save_config",
    "valid_keys",
]

DTYPES = ("float32", "bfloat16", "float16")
SCHEDULERS = ("constant", "linear", "cosine")
MIXED_PRECISIONS = ("no", "bf16", "fp16")
METHODS = ("lora", "full")
BACKENDS = ("ddp", "fsdp2", "deepspeed")
TRACKER_BACKENDS = ("none", "wandb", "tensorboard")
WANDB_MODES = ("online", "offline", "disabled")
RESUME_KEYWORDS = ("latest", "none")

# Keys holding filesystem paths, resolved as described in the module docstring.
PATH_KEYS = (
    "model.checkpoint",
    "model.text_encoder",
    "data.metadata",
    "data.root",
    "data.cache_dir",
    "train.output_dir",
    "lora.init_from",
)


class ConfigError(ValueError):
    """A problem with a recipe or an override, worded for the user."""


# --------------------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------------------


@dataclass
class ModelConfig:
    """Which LTX-2 model to fine-tune and where its weights live.

    Fields:
        variant: shipped variant name (``ltx2-19b``, ``ltx2.3-22b``, ``tiny``) or the path of a
            variant JSON file (same format as ``ltx2train/models/variants/*.json``).
        checkpoint: the weights: a directory of split component files, the official single
            ``.safetensors`` file, or a diffusers-layout directory.  Required.
        text_encoder: local Gemma 3 directory (``config.json`` + tokenizer + weights).  Required.
        distilled: load the distilled transformer file of a split directory instead of the dev one.
        dtype: storage dtype of the frozen weights: ``float32`` | ``bfloat16`` | ``float16``.
    """

    variant: str = "ltx2-19b"  # shipped variant name (ltx2-19b, ltx2.3-22b, tiny) or a variant JSON path
    checkpoint: str = MISSING  # split-file dir, official single file, or diffusers dir
    text_encoder: str = MISSING  # local Gemma 3 directory (config.json + tokenizer)
    distilled: bool = False  # use the distilled transformer file of a split dir
    dtype: str = "bfloat16"  # storage dtype of frozen weights: float32 | bfloat16 | float16


@dataclass
class DataConfig:
    """The training clips, how they are sized, and how they are batched.

    Fields:
        metadata: csv / json / jsonl file with one row per clip: a video path and a caption.  Required.
        video_column: name of the metadata column holding the video path.
        caption_column: name of the metadata column holding the caption.
        root: base directory for relative video paths; ``None`` means the metadata file's directory.
        cache_dir: where ``prepare`` writes, and ``train`` reads, the precomputed latents and text
            embeddings.  Required.
        height: clip height in pixels; a positive multiple of 32.
        width: clip width in pixels; a positive multiple of 32.
        num_frames: frames per clip; of the form 8k+1 (9, 17, ..., 121).
        fps: frame rate clips are resampled to (also sets the audio duration).
        with_audio: also train the audio branch (clips without an audio track get silence).
        max_sequence_length: Gemma token budget per caption.
        batch_size: clips per step per process.
        num_workers: DataLoader worker processes (0 = load in the main process).
        shuffle: shuffle the clips every epoch.
    """

    metadata: str = MISSING  # csv/json/jsonl with video path + caption
    video_column: str = "video"  # metadata column with the video path
    caption_column: str = "caption"  # metadata column with the caption
    root: Optional[str] = None  # base dir for relative video paths (default: metadata's dir)
    cache_dir: str = MISSING  # where prepare writes / train reads latents
    height: int = 512  # multiple of 32
    width: int = 768  # multiple of 32
    num_frames: int = 121  # 8k+1
    fps: float = 24.0  # frames per second clips are resampled to
    with_audio: bool = True  # also train the audio branch
    max_sequence_length: int = 1024  # Gemma token budget
    batch_size: int = 1  # per process
    num_workers: int = 2  # DataLoader workers
    shuffle: bool = True  # reshuffle every epoch


@dataclass
class LoRAConfig:
    """Low-rank adapters inserted into the transformer.

    Fields:
        rank: adapter rank r (typical 8-128).
        alpha: scaling numerator; the update is scaled by ``alpha / rank``.
        dropout: dropout on the adapter input, in [0, 1).
        target_modules: module-name suffixes that receive an adapter (e.g. ``to_q``, ``ff.net.0.proj``).
        init_from: start from an existing LoRA file instead of zero (any dialect: official/ComfyUI with or
            without ``.alpha``, diffusers, DiffSynth, Lightricks' trainer): at step 0 the model acts as with that
            file in its own consumer. Its ranks must equal ``rank`` and its modules be among ``target_modules``.
            Ignored when resuming from a checkpoint.
    """

    rank: int = 32  # adapter rank
    alpha: float = 32.0  # update scaled by alpha / rank
    dropout: float = 0.0  # adapter-input dropout in [0, 1)
    target_modules: List[str] = field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"])  # suffixes
    init_from: Optional[str] = None  # LoRA file to start from (any dialect); null: start from zero


@dataclass
class OptimizerConfig:
    """AdamW and its learning-rate schedule.

    Fields:
        lr: peak learning rate (after warmup).
        betas: AdamW ``(beta1, beta2)``, each in [0, 1).
        weight_decay: decoupled weight decay (>= 0).
        eps: AdamW epsilon (> 0).
        scheduler: shape after warmup: ``constant`` | ``linear`` (to 0) | ``cosine`` (to 0).
        warmup_steps: linear warmup steps from 0 to ``lr``.
        max_grad_norm: gradient-norm clipping threshold; 0 disables clipping.
    """

    lr: float = 1e-4  # peak learning rate
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])  # AdamW betas
    weight_decay: float = 0.01  # decoupled weight decay
    eps: float = 1e-8  # AdamW epsilon
    scheduler: str = "cosine"  # constant | linear | cosine (after warmup)
    warmup_steps: int = 100  # linear warmup steps
    max_grad_norm: float = 1.0  # 0 disables clipping


@dataclass
class ObjectiveConfig:
    """The flow-matching training objective.

    Fields:
        logit_mean: mean of the logit-normal distribution sigmas are sampled from.
        logit_std: standard deviation of that distribution (> 0).
        shift_base: sigma shift at ``shift_base_tokens`` video tokens (same constants as the LTX-2
            scheduler); the shift is interpolated linearly in the token count.
        shift_max: sigma shift at ``shift_max_tokens`` video tokens.
        shift_base_tokens: token count where the shift equals ``shift_base``.
        shift_max_tokens: token count where the shift equals ``shift_max``.
        video_loss_weight: weight of the video velocity loss (>= 0).
        audio_loss_weight: weight of the audio velocity loss (>= 0).
        use_cross_timestep: pass the other modality's sigma to the cross-modal attention
            (the LTX2Pipeline default).
    """

    logit_mean: float = 0.0  # logit-normal sigma sampling
    logit_std: float = 1.0  # logit-normal std
    shift_base: float = 0.95  # token-count-dependent shift, same constants as the LTX-2 scheduler
    shift_max: float = 2.05  # shift at shift_max_tokens
    shift_base_tokens: int = 1024  # tokens at which shift == shift_base
    shift_max_tokens: int = 4096  # tokens at which shift == shift_max
    video_loss_weight: float = 1.0  # weight of the video loss
    audio_loss_weight: float = 1.0  # weight of the audio loss
    use_cross_timestep: bool = True  # pass the other modality's sigma to cross-modal attention (LTX2Pipeline default)


@dataclass
class TrainConfig:
    """The training loop.

    Fields:
        output_dir: run directory (checkpoints, resolved config, logs, samples).  Required.
        method: what is trained: ``lora`` (adapters on the frozen transformer, see ``lora``) | ``full`` (every
            transformer weight, kept in float32 with its optimizer state; the forward in ``mixed_precision``).
        max_steps: optimizer steps to train for.
        seed: global random seed (>= 0).
        gradient_accumulation_steps: micro-batches per optimizer step.
        gradient_checkpointing: recompute transformer activations in backward (saves memory).
        mixed_precision: autocast mode: ``no`` | ``bf16`` | ``fp16``; bf16 only where the device has it.
        checkpoint_every: save a checkpoint every N steps; 0 = only at the end.
        keep_last: number of checkpoints kept (older ones are deleted); >= 1.
        resume: ``latest`` (newest checkpoint in output_dir, if any) | ``none`` | a checkpoint directory.
        log_every: log loss / lr every N steps.
    """

    output_dir: str = MISSING  # run directory
    method: str = "lora"  # lora | full
    max_steps: int = 2000  # optimizer steps
    seed: int = 42  # random seed
    gradient_accumulation_steps: int = 1  # micro-batches per optimizer step
    gradient_checkpointing: bool = True  # recompute activations in backward
    mixed_precision: str = "bf16"  # no | bf16 | fp16 ; bf16 only where available
    checkpoint_every: int = 250  # 0 = only at the end
    keep_last: int = 3  # checkpoints kept (older ones deleted)
    resume: str = "latest"  # latest | none | path to a checkpoint dir
    log_every: int = 10  # log every N steps


@dataclass
class DistributedConfig:
    """How training is distributed over the processes that ``accelerate launch`` / ``torchrun`` start.

    Fields:
        backend: ``ddp``: the model replicated on every process, gradients all-reduced (one process too) |
            ``fsdp2``: parameters, gradients and optimizer state sharded (``fully_shard`` per transformer block,
            then the root); ``train.mixed_precision`` ``bf16`` or ``no`` | ``deepspeed``: DeepSpeed ZeRO
            (``zero_stage``), its engine doing precision, accumulation and clipping.
        reshard_after_forward: fsdp2: free the gathered parameters after each block's forward and gather
            them again in backward (least memory, ZeRO-3 style); false keeps them (ZeRO-2 style, less traffic).
        cpu_offload: fsdp2: keep parameter shards, gradients and optimizer state in host memory.
        zero_stage: deepspeed: 2 (optimizer state and gradients partitioned) | 3 (parameters too).
        offload_optimizer: deepspeed: optimizer state (and its step) in host memory.
        offload_params: deepspeed with zero_stage 3: parameters in host memory.
    """

    backend: str = "ddp"  # ddp | fsdp2
    reshard_after_forward: bool = True  # fsdp2: re-gather in backward (less memory)
    cpu_offload: bool = False  # fsdp2: shards and optimizer state in host memory
    zero_stage: int = 2  # deepspeed: 2 | 3
    offload_optimizer: bool = False  # deepspeed: optimizer state in host memory
    offload_params: bool = False  # deepspeed, zero_stage 3: parameters in host memory


@dataclass
class ValidationConfig:
    """Sample generation during training.

    Fields:
        prompts: prompts rendered at each validation; empty disables validation.
        seed: noise seed for the samples (same every time, so runs are comparable).
        every: validate every N steps; 0 = only at the end (if prompts are given).
        at_start: also validate before the first step (baseline).
        height: sample height, a positive multiple of 32.
        width: sample width, a positive multiple of 32.
        num_frames: sample frames, of the form 8k+1.
        fps: sample frame rate.
        steps: denoising steps per sample.
        guidance_scale: video classifier-free guidance scale; 1.0 disables it.
        audio_guidance_scale: audio classifier-free guidance scale (LTX-2 uses a higher one for audio).
        stg_scale: spatio-temporal guidance scale (video and audio); 0 disables it.
        stg_blocks: transformer blocks whose self-attention STG skips ([29] for LTX-2 19B).
        modality_scale: modality-isolation guidance scale (audio<->video cross-attention off); 1.0 disables it.
        guidance_rescale: rescale of the guided prediction toward the conditional one's std, in [0, 1].
        negative_prompt: negative prompt used with classifier-free guidance.
        loss_sigmas: noise levels of the validation loss: the flow-matching loss of a fixed set of cached
            clips with fixed noise at exactly these sigmas, logged at every validation. Unlike the training
            loss it is deterministic, so its curve shows learning without sampling noise; empty disables it.
        loss_clips: how many cached clips (the first ones) the validation loss uses.
    """

    prompts: List[str] = field(default_factory=list)  # empty = no validation
    seed: int = 42  # sampling seed
    every: int = 250  # 0 = only at the end (if prompts given)
    at_start: bool = False  # also validate before training
    height: int = 512  # multiple of 32
    width: int = 768  # multiple of 32
    num_frames: int = 121  # 8k+1
    fps: float = 24.0  # sample frame rate
    steps: int = 30  # denoising steps
    guidance_scale: float = 3.0  # video CFG scale (1.0 = off)
    audio_guidance_scale: float = 7.0  # audio CFG scale (1.0 = off)
    stg_scale: float = 1.0  # spatio-temporal guidance (0 = off)
    stg_blocks: List[int] = field(default_factory=lambda: [29])  # blocks STG perturbs
    modality_scale: float = 3.0  # modality-isolation guidance (1.0 = off)
    guidance_rescale: float = 0.7  # in [0, 1]
    negative_prompt: str = ""  # CFG negative prompt
    loss_sigmas: List[float] = field(default_factory=lambda: [0.25, 0.5, 0.75])  # fixed-sigma validation loss
    loss_clips: int = 4  # cached clips in the validation loss


@dataclass
class TrackerConfig:
    """Experiment tracking.

    Fields:
        backend: ``none`` | ``wandb`` | ``tensorboard``.
        project: tracker project name.
        run_name: run name; ``None`` lets the tracker (or the output dir name) decide.
        entity: wandb entity (team / user); ``None`` = the default one.
        mode: wandb mode: ``online`` | ``offline`` | ``disabled``.
    """

    backend: str = "none"  # none | wandb | tensorboard
    project: str = "ltx2train"  # project name
    run_name: Optional[str] = None  # run name (None = automatic)
    entity: Optional[str] = None  # wandb entity (None = default)
    mode: str = "offline"  # wandb mode: online | offline | disabled


@dataclass
class Config:
    """A complete training configuration (one field per recipe section).

    Fields:
        model: :class:`ModelConfig` -- which model and where its weights are.
        data: :class:`DataConfig` -- clips, sizes, batching.
        lora: :class:`LoRAConfig` -- adapter shape and placement.
        optimizer: :class:`OptimizerConfig` -- AdamW and learning-rate schedule.
        objective: :class:`ObjectiveConfig` -- flow-matching loss.
        train: :class:`TrainConfig` -- training loop, checkpoints, resume.
        distributed: :class:`DistributedConfig` -- how training is spread over processes.
        validation: :class:`ValidationConfig` -- sampling during training.
        tracker: :class:`TrackerConfig` -- experiment tracking.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)


# --------------------------------------------------------------------------------------------------
# Schema introspection
# --------------------------------------------------------------------------------------------------


def _schema(cls: type = Config, prefix: str = "") -> tuple[dict[str, Any], dict[str, type]]:
    """(leaf dotted key -> annotation, section dotted key -> dataclass) for ``cls``."""
    leaves: dict[str, Any] = {}
    sections: dict[str, type] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        ann = hints[f.name]
        if dataclasses.is_dataclass(ann):
            sections[key] = ann
            sub_leaves, sub_sections = _schema(ann, key + ".")
            leaves.update(sub_leaves)
            sections.update(sub_sections)
        else:
            leaves[key] = ann
    return leaves, sections


_LEAVES, _SECTIONS = _schema()


def valid_keys() -> list[str]:
    """Every valid dotted key: sections and fields."""
    return sorted([*_SECTIONS, *_LEAVES])


def _is_optional(ann: Any) -> bool:
    return typing.get_origin(ann) is Union and type(None) in typing.get_args(ann)


def _base_type(ann: Any) -> Any:
    if _is_optional(ann):
        return next(a for a in typing.get_args(ann) if a is not type(None))
    return ann


def _type_name(ann: Any) -> str:
    if _is_optional(ann):
        return f"{_type_name(_base_type(ann))} or null"
    if typing.get_origin(ann) in (list, List):
        (item,) = typing.get_args(ann)
        return f"list of {_type_name(item)}"
    return getattr(ann, "__name__", str(ann))


def _unknown_key_message(key: str) -> str:
    match = difflib.get_close_matches(key, valid_keys(), n=1)
    if match:
        return f"unknown config key '{key}' — did you mean '{match[0]}'?"
    parent = key.rpartition(".")[0]
    if parent in _SECTIONS:
        names = [f.name for f in dataclasses.fields(_SECTIONS[parent])]
        return f"unknown config key '{key}' (valid keys in '{parent}': {', '.join(names)})"
    return f"unknown config key '{key}' (valid sections: {', '.join(f.name for f in dataclasses.fields(Config))})"


def _choice_message(key: str, value: Any, choices: Sequence[str]) -> str:
    msg = f"{key}: expected one of {' | '.join(choices)}, got {value!r}"
    match = difflib.get_close_matches(str(value), choices, n=1)
    if match:
        msg += f" — did you mean '{match[0]}'?"
    return msg


# --------------------------------------------------------------------------------------------------
# YAML parsing (YAML 1.2-style booleans, floats such as 1e-4)
# --------------------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    pass


_BOOL_TAG = "tag:yaml.org,2002:bool"
_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != _BOOL_TAG]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - SafeLoader subclass


# --------------------------------------------------------------------------------------------------
# Collecting (key, value) assignments
# --------------------------------------------------------------------------------------------------


def _flatten(data: Any, prefix: str, errors: list[str], out: list[tuple[str, Any]]) -> None:
    """Walk a (section) mapping against the schema, appending leaf assignments to ``out``."""
    for raw_key, value in data.items():
        key = f"{prefix}{raw_key}"
        if not isinstance(raw_key, str):
            errors.append(f"config keys must be strings, got {raw_key!r} in '{prefix.rstrip('.') or '<top level>'}'")
        elif key in _SECTIONS:
            if value is None:  # an empty section: keep the defaults
                continue
            if not isinstance(value, dict):
                errors.append(f"{key}: expected a mapping of {_SECTIONS[key].__name__} fields, got {value!r}")
                continue
            _flatten(value, key + ".", errors, out)
        elif key in _LEAVES:
            out.append((key, value))
        else:
            errors.append(_unknown_key_message(key))


def _parse_override(item: str, errors: list[str], out: list[tuple[str, Any]]) -> None:
    if not isinstance(item, str) or "=" not in item:
        errors.append(f"malformed override {item!r}: expected key=value (e.g. train.max_steps=10)")
        return
    key, _, raw = item.partition("=")
    key = key.strip()
    if not key:
        errors.append(f"malformed override {item!r}: empty key")
        return
    if key in _LEAVES:
        ann = _LEAVES[key]
        if _base_type(ann) is str and not (raw.startswith(("'", '"'))) and not (
            _is_optional(ann) and raw.strip() in ("null", "~")
        ):
            out.append((key, raw))  # strings are taken literally
            return
    elif key not in _SECTIONS:
        errors.append(_unknown_key_message(key))
        return
    try:
        value = _yaml_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        errors.append(f"malformed override {item!r}: cannot parse value: {_one_line(exc)}")
        return
    if key in _LEAVES and _LEAVES[key] == List[str] and isinstance(value, list):
        if not all(isinstance(x, (str, int, float)) and not isinstance(x, bool) for x in value):
            # e.g. [a cat: sleeping, a dog] -- YAML reads "a cat: sleeping" as a mapping; take the
            # comma-separated items literally instead (quote items that contain commas).
            value = _split_list(raw)
    if key in _SECTIONS:
        if not isinstance(value, dict):
            errors.append(f"{key}: expected a mapping of {_SECTIONS[key].__name__} fields, got {value!r}")
            return
        _flatten(value, key + ".", errors, out)
    else:
        out.append((key, value))


def _split_list(raw: str) -> list[str]:
    inner = raw.strip()
    if inner.startswith("[") and inner.endswith("]"):
        inner = inner[1:-1]
    if not inner.strip():
        return []
    row = next(csv.reader([inner], skipinitialspace=True))
    return [item.strip() for item in row]


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _assign(cfg: Any, key: str, value: Any, errors: list[str]) -> None:
    ann = _LEAVES[key]
    if key == "train.resume" and value in (None, "null", "~"):
        value = "none"
    if isinstance(value, dict):
        errors.append(f"{key}: expected {_type_name(ann)}, got {value!r}")
        return
    base = _base_type(ann)
    if base is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    if base is bool and isinstance(value, (int, float)) and not isinstance(value, bool):
        errors.append(f"{key}: expected bool, got {value!r}")
        return
    if base is str and isinstance(value, (list, tuple)):
        errors.append(f"{key}: expected {_type_name(ann)}, got {value!r}")
        return
    if typing.get_origin(base) in (list, List) and not isinstance(value, (list, tuple)):
        errors.append(f"{key}: expected {_type_name(ann)}, got {value!r}")
        return
    try:
        OmegaConf.update(cfg, key, value, merge=False)
    except OmegaConfBaseException:
        errors.append(f"{key}: expected {_type_name(ann)}, got {value!r}")


# --------------------------------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------------------------------


def _is_dot_relative(value: str) -> bool:
    return value in (".", "..") or value.startswith(("./", "../", ".\\", "..\\"))


def _resolve_path(value: str, recipe_dir: Path, from_recipe: bool) -> str:
    value = os.path.expanduser(value)
    if os.path.isabs(value):
        return os.path.normpath(value)
    base = recipe_dir if (from_recipe and _is_dot_relative(value)) else Path.cwd()
    return os.path.abspath(os.path.join(base, value))


def _shipped_variants() -> list[str]:
    # Read the directory directly: importing ltx2train.models would import torch.
    return sorted(p.stem for p in (Path(__file__).parent / "models" / "variants").glob("*.json"))


def _looks_like_path(value: str) -> bool:
    return value.endswith(".json") or "/" in value or os.sep in value or value.startswith("~")


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------


def _validate(cfg: Config) -> list[str]:
    errors: list[str] = []

    def need(ok: bool, msg: str) -> None:
        if not ok:
            errors.append(msg)

    def choice(key: str, value: str, choices: Sequence[str]) -> None:
        if value not in choices:
            errors.append(_choice_message(key, value, choices))

    def frames(key: str, n: int) -> None:
        need(n >= 1 and (n - 1) % 8 == 0, f"{key}: must be of the form 8k+1 (9, 17, 25, ..., 121), got {n}")

    def mult32(key: str, n: int) -> None:
        need(n > 0 and n % 32 == 0, f"{key}: must be a positive multiple of 32, got {n}")

    m, d, lo, o, ob, t, v, tr = (
        cfg.model, cfg.data, cfg.lora, cfg.optimizer, cfg.objective, cfg.train, cfg.validation, cfg.tracker
    )

    # model
    shipped = _shipped_variants()
    if m.variant not in shipped:
        if _looks_like_path(m.variant):
            need(Path(m.variant).is_file(), f"model.variant: variant file {m.variant} does not exist")
        else:
            msg = (
                f"model.variant: unknown variant {m.variant!r}; "
                f"shipped variants: {', '.join(shipped)} (or a variant .json path)"
            )
            match = difflib.get_close_matches(m.variant, shipped, n=1)
            errors.append(msg + (f" — did you mean '{match[0]}'?" if match else ""))
    choice("model.dtype", m.dtype, DTYPES)

    # data
    need(bool(d.video_column), "data.video_column: must not be empty")
    need(bool(d.caption_column), "data.caption_column: must not be empty")
    mult32("data.height", d.height)
    mult32("data.width", d.width)
    frames("data.num_frames", d.num_frames)
    need(d.fps > 0, f"data.fps: must be > 0, got {d.fps}")
    need(d.max_sequence_length >= 1, f"data.max_sequence_length: must be >= 1, got {d.max_sequence_length}")
    need(d.batch_size >= 1, f"data.batch_size: must be >= 1, got {d.batch_size}")
    need(d.num_workers >= 0, f"data.num_workers: must be >= 0, got {d.num_workers}")

    # lora
    need(lo.rank >= 1, f"lora.rank: must be >= 1, got {lo.rank}")
    need(lo.alpha > 0, f"lora.alpha: must be > 0, got {lo.alpha}")
    need(0.0 <= lo.dropout < 1.0, f"lora.dropout: must be in [0, 1), got {lo.dropout}")
    need(
        len(lo.target_modules) > 0 and all(s.strip() for s in lo.target_modules),
        f"lora.target_modules: must be a non-empty list of module names, got {lo.target_modules!r}",
    )

    # optimizer
    need(o.lr > 0, f"optimizer.lr: must be > 0, got {o.lr}")
    need(
        len(o.betas) == 2 and all(0.0 <= b < 1.0 for b in o.betas),
        f"optimizer.betas: must be two values in [0, 1), got {o.betas!r}",
    )
    need(o.weight_decay >= 0, f"optimizer.weight_decay: must be >= 0, got {o.weight_decay}")
    need(o.eps > 0, f"optimizer.eps: must be > 0, got {o.eps}")
    choice("optimizer.scheduler", o.scheduler, SCHEDULERS)
    need(o.warmup_steps >= 0, f"optimizer.warmup_steps: must be >= 0, got {o.warmup_steps}")
    need(o.max_grad_norm >= 0, f"optimizer.max_grad_norm: must be >= 0 (0 disables clipping), got {o.max_grad_norm}")

    # objective
    need(ob.logit_std > 0, f"objective.logit_std: must be > 0, got {ob.logit_std}")
    need(ob.shift_base_tokens >= 1, f"objective.shift_base_tokens: must be >= 1, got {ob.shift_base_tokens}")
    need(
        ob.shift_max_tokens > ob.shift_base_tokens,
        f"objective.shift_max_tokens: must be > objective.shift_base_tokens ({ob.shift_base_tokens}), "
        f"got {ob.shift_max_tokens}",
    )
    need(ob.video_loss_weight >= 0, f"objective.video_loss_weight: must be >= 0, got {ob.video_loss_weight}")
    need(ob.audio_loss_weight >= 0, f"objective.audio_loss_weight: must be >= 0, got {ob.audio_loss_weight}")
    active = ob.video_loss_weight + (ob.audio_loss_weight if d.with_audio else 0.0)
    need(active > 0, "objective: the active loss weights (video, and audio when data.with_audio) are all 0")

    # train
    need(t.max_steps >= 1, f"train.max_steps: must be >= 1, got {t.max_steps}")
    need(t.seed >= 0, f"train.seed: must be >= 0, got {t.seed}")
    need(
        t.gradient_accumulation_steps >= 1,
        f"train.gradient_accumulation_steps: must be >= 1, got {t.gradient_accumulation_steps}",
    )
    choice("train.mixed_precision", t.mixed_precision, MIXED_PRECISIONS)
    choice("train.method", t.method, METHODS)
    choice("distributed.backend", cfg.distributed.backend, BACKENDS)
    dist = cfg.distributed
    if dist.backend == "fsdp2":
        need(t.mixed_precision != "fp16", "train.mixed_precision: fp16 needs loss scaling, which the fsdp2 backend "
             "does not do; use bf16 (or no)")
    need(not dist.cpu_offload or dist.backend == "fsdp2",
         f"distributed.cpu_offload is the fsdp2 backend's (distributed.backend is {dist.backend}; deepspeed has "
         "offload_optimizer and offload_params)")
    need(dist.zero_stage in (2, 3), f"distributed.zero_stage: must be 2 or 3, got {dist.zero_stage}")
    need(not (dist.offload_optimizer or dist.offload_params) or dist.backend == "deepspeed",
         f"distributed.offload_optimizer / offload_params are the deepspeed backend's (distributed.backend is "
         f"{dist.backend}; fsdp2 has cpu_offload)")
    need(not dist.offload_params or dist.zero_stage == 3,
         "distributed.offload_params: parameters are partitioned (and offloadable) with zero_stage 3 only")
    need(
        t.checkpoint_every >= 0,
        f"train.checkpoint_every: must be >= 0 (0 = only at the end), got {t.checkpoint_every}",
    )
    need(t.keep_last >= 1, f"train.keep_last: must be >= 1, got {t.keep_last}")
    if t.resume not in RESUME_KEYWORDS:
        need(
            Path(t.resume).exists(),
            f"train.resume: {t.resume} does not exist (expected 'latest', 'none' or a checkpoint directory)",
        )
    need(t.log_every >= 1, f"train.log_every: must be >= 1, got {t.log_every}")

    # validation
    need(all(p.strip() for p in v.prompts), "validation.prompts: prompts must not be empty strings")
    need(v.seed >= 0, f"validation.seed: must be >= 0, got {v.seed}")
    need(v.every >= 0, f"validation.every: must be >= 0 (0 = only at the end), got {v.every}")
    mult32("validation.height", v.height)
    mult32("validation.width", v.width)
    frames("validation.num_frames", v.num_frames)
    need(v.fps > 0, f"validation.fps: must be > 0, got {v.fps}")
    need(v.steps >= 2, "validation.steps: must be >= 2 (the LTX-2 scheduler stretches sigmas to its terminal "
                       f"value; one step gives NaN), got {v.steps}")
    need(v.guidance_scale >= 0, f"validation.guidance_scale: must be >= 0, got {v.guidance_scale}")
    need(v.audio_guidance_scale >= 0, f"validation.audio_guidance_scale: must be >= 0, got {v.audio_guidance_scale}")
    need(v.stg_scale >= 0, f"validation.stg_scale: must be >= 0, got {v.stg_scale}")
    need(v.stg_scale == 0 or (v.stg_blocks and all(b >= 0 for b in v.stg_blocks)),
         f"validation.stg_blocks: STG needs block indices >= 0, got {v.stg_blocks}")
    need(v.modality_scale >= 0, f"validation.modality_scale: must be >= 0, got {v.modality_scale}")
    need(0.0 <= v.guidance_rescale <= 1.0, f"validation.guidance_rescale: must be in [0, 1], got {v.guidance_rescale}")
    need(all(0.0 < x < 1.0 for x in v.loss_sigmas), f"validation.loss_sigmas: each must be in (0, 1), got {v.loss_sigmas}")
    need(v.loss_clips >= 1, f"validation.loss_clips: must be >= 1, got {v.loss_clips}")

    # tracker
    choice("tracker.backend", tr.backend, TRACKER_BACKENDS)
    choice("tracker.mode", tr.mode, WANDB_MODES)
    need(bool(tr.project), "tracker.project: must not be empty")
    return errors


def _raise(errors: list[str], source: str) -> None:
    if not errors:
        return
    if len(errors) == 1:
        raise ConfigError(errors[0])
    raise ConfigError(f"{len(errors)} problems in {source}:\n" + "\n".join(f"  - {e}" for e in errors))


def _get(cfg: Config, key: str) -> Any:
    obj: Any = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


def load_config(
    recipe: Union[str, Path],
    overrides: Sequence[str] = (),
    *,
    check_paths: Iterable[str] = (),
) -> Config:
    """Load ``recipe`` (YAML), apply ``key=value`` ``overrides`` in order, validate, return a :class:`Config`.

    ``check_paths`` lists dotted keys (e.g. ``("model.checkpoint", "data.metadata")``) whose paths
    must exist.  Every problem raises :class:`ConfigError`; see the module docstring for the path
    resolution rules.
    """
    recipe_path = Path(recipe).expanduser()
    if not recipe_path.is_file():
        raise ConfigError(f"recipe {recipe_path} does not exist")
    recipe_dir = recipe_path.resolve().parent
    source = f"{recipe_path}" + (" + overrides" if overrides else "")
    if isinstance(overrides, str):
        overrides = [overrides]

    try:
        data = _yaml_load(recipe_path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{recipe_path}: invalid YAML: {_one_line(exc)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{recipe_path}: expected a mapping of sections at the top level, got {type(data).__name__}")

    errors: list[str] = []
    recipe_items: list[tuple[str, Any]] = []
    _flatten(data, "", errors, recipe_items)
    override_items: list[tuple[str, Any]] = []
    for item in overrides:
        _parse_override(item, errors, override_items)
    _raise(errors, source)

    cfg = OmegaConf.structured(Config)
    origin: dict[str, str] = {}
    for key, value in recipe_items:
        _assign(cfg, key, value, errors)
        origin[key] = "recipe"
    for key, value in override_items:
        _assign(cfg, key, value, errors)
        origin[key] = "override"
    _raise(errors, source)

    for key in _LEAVES:
        parent_key, _, name = key.rpartition(".")
        if OmegaConf.is_missing(OmegaConf.select(cfg, parent_key), name):
            errors.append(f"{key} is required")
    _raise(errors, source)

    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None)
        prefix = f"{key}: " if key else ""
        raise ConfigError(f"{prefix}cannot resolve interpolation: {_one_line(exc).split(' full_key:')[0]}") from None

    # Paths -> absolute.
    def fix(key: str) -> None:
        value = OmegaConf.select(cfg, key)
        if isinstance(value, str) and value:
            OmegaConf.update(cfg, key, _resolve_path(value, recipe_dir, origin.get(key) == "recipe"), merge=False)

    for key in PATH_KEYS:
        fix(key)
    if cfg.train.resume not in RESUME_KEYWORDS:
        fix("train.resume")
    if cfg.model.variant not in _shipped_variants() and _looks_like_path(cfg.model.variant):
        fix("model.variant")

    try:
        result = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as exc:  # pragma: no cover - types were checked above
        raise ConfigError(_one_line(exc)) from None
    assert isinstance(result, Config)

    errors = _validate(result)
    _raise(errors, source)

    for key in check_paths:
        if key not in _LEAVES:
            raise ConfigError(_unknown_key_message(key))
        value = _get(result, key)
        if value is None:
            continue
        if not Path(value).exists():
            errors.append(f"{key}: {value} does not exist")
    _raise(errors, source)
    return result


def config_to_dict(cfg: Config) -> dict:
    """A plain nested ``dict`` copy of ``cfg`` (for trackers and JSON)."""
    if not isinstance(cfg, Config):
        raise TypeError(f"expected a Config, got {type(cfg).__name__}")
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: Union[str, Path]) -> Path:
    """Write ``cfg`` as resolved YAML to ``path`` atomically; return the path."""
    text = "# resolved ltx2train config (written by ltx2train.config.save_config)\n"
    text += OmegaConf.to_yaml(OmegaConf.structured(cfg), resolve=True)
    return write_text_atomic(path, text)
