"""Value checks of a loaded :class:`Config`, one function per recipe section; every problem is collected
(worded for the user, with the key, the value and what is allowed) and raised together by the loader.

Over 400 lines: every rule of a recipe, those across sections included, lives here so that ``train``, ``prepare`` and
``inspect memory`` refuse a recipe alike; split by section, the cross-section rules would need a home again."""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Sequence

from ltx2train.config.fields import choice_message
from ltx2train.config.schema import (
    BACKENDS,
    CROPS,
    DTYPES,
    EXTRAS,
    FP8_COMPONENTS,
    METHODS,
    MIXED_PRECISIONS,
    OPTIMIZERS,
    RESUME_KEYWORDS,
    ROLES,
    SCHEDULERS,
    STRATEGIES,
    TRACKER_BACKENDS,
    VIDEO_DECODERS,
    WANDB_MODES,
    WINDOWS,
    Config,
    dataset_sources,
)


def shipped_variants() -> list[str]:
    # Read the directory directly: importing ltx2train.models would import torch.
    return sorted(p.stem for p in (Path(__file__).parents[1] / "models" / "variants").glob("*.json"))


def looks_like_path(value: str) -> bool:
    return value.endswith(".json") or "/" in value or os.sep in value or value.startswith("~")


class _Checks:
    def __init__(self):
        self.errors: list[str] = []

    def need(self, ok: bool, msg: str) -> None:
        if not ok:
            self.errors.append(msg)

    def choice(self, key: str, value: str, choices: Sequence[str]) -> None:
        if value not in choices:
            self.errors.append(choice_message(key, value, choices))

    def frames(self, key: str, n: int) -> None:
        self.need(n >= 1 and (n - 1) % 8 == 0, f"{key}: must be of the form 8k+1 (9, 17, 25, ..., 121), got {n}")

    def mult32(self, key: str, n: int) -> None:
        self.need(n > 0 and n % 32 == 0, f"{key}: must be a positive multiple of 32, got {n}")

    def at_least(self, key: str, value, low, note: str = "") -> None:
        self.need(value >= low, f"{key}: must be >= {low}{note}, got {value}")


def validate(cfg: Config) -> list[str]:
    c = _Checks()
    for check in (
        _model,
        _data,
        _lora,
        _optimizer,
        _objective,
        _strategy,
        _train,
        _distributed,
        _validation,
        _tracker,
        _memory,
    ):
        check(c, cfg)
    return c.errors


def _model(c: _Checks, cfg: Config) -> None:
    m, shipped = cfg.model, shipped_variants()
    if m.variant not in shipped:
        if looks_like_path(m.variant):
            c.need(Path(m.variant).is_file(), f"model.variant: variant file {m.variant} does not exist")
        else:
            match = difflib.get_close_matches(m.variant, shipped, n=1)
            c.errors.append(
                f"model.variant: unknown variant {m.variant!r}; shipped variants: {', '.join(shipped)} "
                "(or a variant .json path)" + (f" — did you mean '{match[0]}'?" if match else "")
            )
    c.choice("model.dtype", m.dtype, DTYPES)


def _data(c: _Checks, cfg: Config) -> None:
    d = cfg.data
    c.need(bool(d.video_column), "data.video_column: must not be empty")
    c.need(bool(d.caption_column), "data.caption_column: must not be empty")
    _data_sources(c, d)
    _data_shape(c, d)
    c.need(d.fps > 0, f"data.fps: must be > 0, got {d.fps}")
    c.at_least("data.max_sequence_length", d.max_sequence_length, 1)
    c.at_least("data.batch_size", d.batch_size, 1)
    c.at_least("data.num_workers", d.num_workers, 0)


def _data_sources(c: _Checks, d) -> None:
    """The datasets (the first one, then ``data.datasets``): repeats, weights all or none, distinct caches."""
    keys = ["data"] + [f"data.datasets[{i}]" for i in range(len(d.datasets))]
    sources = list(zip(keys, dataset_sources(d)))
    for key, src in sources:
        c.at_least(f"{key}.repeats", src.repeats, 1)
        c.need(src.weight is None or src.weight > 0, f"{key}.weight: must be > 0 (or null), got {src.weight}")
    unweighted = [
        f"{key}.weight" + (" (the first dataset's)" if key == "data" else "")
        for key, src in sources
        if src.weight is None
    ]
    if len(unweighted) < len(sources):  # weights in use
        c.need(
            not unweighted,
            "dataset weights: either every dataset has a weight or none has; not set: " + ", ".join(unweighted),
        )
        repeated = [f"{key}.repeats={src.repeats}" for key, src in sources if src.repeats != 1]
        c.need(
            not repeated,
            f"{', '.join(repeated)}: use weights or repeats, not both (the datasets have "
            "weights, so every repeats must be 1)",
        )
    seen: dict[str, str] = {}
    for key, src in sources:
        where = os.path.realpath(os.path.expanduser(src.cache_dir))
        c.need(
            where not in seen,
            f"{key}.cache_dir: {src.cache_dir} is also {seen.get(where)}.cache_dir; "
            "every dataset needs its own cache_dir",
        )
        seen.setdefault(where, key)


def _data_shape(c: _Checks, d) -> None:
    from ltx2train.data.buckets import Bucket

    c.need(
        (d.height is None) == (d.width is None),
        "data.height and data.width: set both (a fixed size) or "
        f"leave both null (dynamic resolution), got height={d.height}, width={d.width}",
    )
    for key, value in (("data.height", d.height), ("data.width", d.width)):
        if value is not None:
            c.mult32(key, value)
    c.frames("data.num_frames", d.num_frames)
    for n in d.frame_buckets:
        c.frames("data.frame_buckets", n)
    c.at_least("data.max_pixels", d.max_pixels, 32 * 32)
    c.need(
        len(d.aspect_ratios) > 0 and all(a > 0 for a in d.aspect_ratios),
        f"data.aspect_ratios: must be a non-empty list of positive width/height ratios, got {d.aspect_ratios}",
    )
    for text in d.buckets:
        try:
            problem = Bucket.parse(text).problem()
        except ValueError as exc:
            problem = str(exc)
        c.need(problem is None, f"data.buckets: {problem}")
    c.choice("data.crop", d.crop, CROPS)
    c.choice("data.window", d.window, WINDOWS)
    c.at_least("data.max_windows", d.max_windows, 1)
    _data_extras(c, d)


def _data_extras(c: _Checks, d) -> None:
    from ltx2train.data.buckets import from_config

    for extra in d.extras:
        c.choice("data.extras", extra, EXTRAS)
    c.at_least("data.reference_downscale", d.reference_downscale, 1)
    if "reference" not in d.extras or c.errors:
        return
    c.need(
        bool(d.reference_video_column),
        "data.extras: reference needs data.reference_video_column (the metadata "
        "column with each row's reference video)",
    )
    step = 32 * d.reference_downscale
    bad = [b.name for b in from_config(d) if b.height % step or b.width % step]
    c.need(
        not bad,
        f"data.reference_downscale={d.reference_downscale}: the reference video of a bucket is encoded "
        f"at its size / {d.reference_downscale}, which must be a multiple of 32: the buckets' height and width "
        f"must be multiples of {step} ({', '.join(bad[:4])} are not)",
    )


def _lora(c: _Checks, cfg: Config) -> None:
    lo = cfg.lora
    c.at_least("lora.rank", lo.rank, 1)
    c.need(lo.alpha > 0, f"lora.alpha: must be > 0, got {lo.alpha}")
    c.need(0.0 <= lo.dropout < 1.0, f"lora.dropout: must be in [0, 1), got {lo.dropout}")
    c.need(
        len(lo.target_modules) > 0 and all(s.strip() for s in lo.target_modules),
        f"lora.target_modules: must be a non-empty list of module names, got {lo.target_modules!r}",
    )
    from ltx2train.lora.adapters import GATE_LOGITS

    gates = [m for m in lo.target_modules if m.split(".")[-1] == GATE_LOGITS]
    c.need(
        not gates,
        f"lora.target_modules: {gates[0] if gates else ''} are LTX-2.3's attention gates, which a LoRA "
        "adapts only when asked: remove it from the list and set lora.gate_logits=true",
    )
    frozen8 = {"transformer", "connectors"} & set(cfg.memory.fp8_frozen)
    c.need(
        not (lo.preset and frozen8),
        f"lora.preset with memory.fp8_frozen {sorted(frozen8)}: the presets would be "
        "merged into float8 weights; merge them into the base first (ltx2train export LORA --merge BASE)",
    )
    if lo.gate_logits and not c.errors:
        c.need(
            _has_gates(cfg.model.variant),
            f"lora.gate_logits=true: model.variant {cfg.model.variant} has no "
            "gated attention (LTX-2.0); set lora.gate_logits=false",
        )


def _variant(variant: str):
    from ltx2train.models.specs import load_variant

    return load_variant(variant)


def _has_gates(variant: str) -> bool:
    config = _variant(variant).component("transformer").config
    return bool(config.get("gated_attn") or config.get("audio_gated_attn"))


def _optimizer(c: _Checks, cfg: Config) -> None:
    o = cfg.optimizer
    c.choice("optimizer.name", o.name, OPTIMIZERS)
    c.need(
        o.name != "adamw8bit" or cfg.distributed.backend == "ddp",
        f"optimizer.name=adamw8bit: tested with the ddp backend only; distributed.backend="
        f"{cfg.distributed.backend} shards the optimizer state already (fsdp2 hands DTensor shards, DeepSpeed "
        "its flat partitions): use optimizer.name=adamw there",
    )
    c.need(
        not (o.fused and o.name == "adamw8bit"),
        "optimizer.fused=true is torch's fused AdamW; optimizer.name=adamw8bit has kernels of its own: leave "
        "optimizer.fused null (or use optimizer.name=adamw)",
    )
    c.need(o.lr > 0, f"optimizer.lr: must be > 0, got {o.lr}")
    c.need(
        len(o.betas) == 2 and all(0.0 <= b < 1.0 for b in o.betas),
        f"optimizer.betas: must be two values in [0, 1), got {o.betas!r}",
    )
    c.at_least("optimizer.weight_decay", o.weight_decay, 0)
    c.need(o.eps > 0, f"optimizer.eps: must be > 0, got {o.eps}")
    c.choice("optimizer.scheduler", o.scheduler, SCHEDULERS)
    c.at_least("optimizer.warmup_steps", o.warmup_steps, 0)
    c.at_least("optimizer.max_grad_norm", o.max_grad_norm, 0, " (0 disables clipping)")


def _objective(c: _Checks, cfg: Config) -> None:
    ob = cfg.objective
    c.need(ob.logit_std > 0, f"objective.logit_std: must be > 0, got {ob.logit_std}")
    c.at_least("objective.shift_base_tokens", ob.shift_base_tokens, 1)
    c.need(
        ob.shift_max_tokens > ob.shift_base_tokens,
        f"objective.shift_max_tokens: must be > objective.shift_base_tokens ({ob.shift_base_tokens}), "
        f"got {ob.shift_max_tokens}",
    )
    c.at_least("objective.video_loss_weight", ob.video_loss_weight, 0)
    c.at_least("objective.audio_loss_weight", ob.audio_loss_weight, 0)
    active = ob.video_loss_weight + (ob.audio_loss_weight if cfg.data.with_audio else 0.0)
    c.need(active > 0, "objective: the active loss weights (video, and audio when data.with_audio) are all 0")


def _strategy(c: _Checks, cfg: Config) -> None:
    st = cfg.strategy
    c.choice("strategy.name", st.name, STRATEGIES)
    if st.video is not None:
        c.choice("strategy.video", st.video, ROLES[:2])
    if st.audio is not None:
        c.choice("strategy.audio", st.audio, ROLES)
    c.need(
        0.0 <= st.first_frame_probability <= 1.0,
        f"strategy.first_frame_probability: must be in [0, 1], got {st.first_frame_probability}",
    )
    c.need(0.0 <= st.caption_dropout < 1.0, f"strategy.caption_dropout: must be in [0, 1), got {st.caption_dropout}")
    c.need(
        st.caption_dropout == 0 or "empty_prompt" in cfg.data.extras,
        "strategy.caption_dropout: trains with the cached empty prompt; add empty_prompt to data.extras and run "
        "`ltx2train prepare` into a new data.cache_dir",
    )
    c.need(
        st.name != "ic_lora" or "reference" in cfg.data.extras,
        "strategy.name=ic_lora: needs the reference videos' latents in the cache; add reference to data.extras "
        "(and data.reference_video_column) and run `ltx2train prepare` into a new data.cache_dir",
    )


def _train(c: _Checks, cfg: Config) -> None:
    t = cfg.train
    c.at_least("train.max_steps", t.max_steps, 1)
    c.need(t.num_epochs is None or t.num_epochs >= 1, f"train.num_epochs: must be >= 1 (or null), got {t.num_epochs}")
    c.at_least("train.seed", t.seed, 0)
    c.at_least("train.gradient_accumulation_steps", t.gradient_accumulation_steps, 1)
    c.choice("train.mixed_precision", t.mixed_precision, MIXED_PRECISIONS)
    c.choice("train.method", t.method, METHODS)
    _trainable(c, cfg)
    c.at_least("train.checkpoint_every", t.checkpoint_every, 0, " (0 = only at the end)")
    c.at_least("train.keep_last", t.keep_last, 1)
    if t.resume not in RESUME_KEYWORDS:
        c.need(
            Path(t.resume).exists(),
            f"train.resume: {t.resume} does not exist (expected 'latest', 'none' or a checkpoint directory)",
        )
    c.at_least("train.log_every", t.log_every, 1)


def _trainable(c: _Checks, cfg: Config) -> None:
    from ltx2train.models.trained import TRAINABLE

    trainable = list(cfg.train.trainable)
    unknown = [x for x in trainable if x not in TRAINABLE]
    c.need(not unknown, f"train.trainable: {unknown} unknown; the trainable components are {list(TRAINABLE)}")
    c.need(len(set(trainable)) == len(trainable), f"train.trainable: {trainable} names a component twice")
    c.need(
        "transformer" in trainable,
        f"train.trainable: {trainable} must contain transformer (the connectors are "
        "trained with the DiT, not alone): [transformer] or [transformer, connectors]",
    )
    frozen8 = "connectors" in trainable and "connectors" in cfg.memory.fp8_frozen
    c.need(
        not frozen8,
        "train.trainable has connectors and memory.fp8_frozen has them too: FP8 storage is for "
        "frozen weights; drop connectors from one of the two",
    )


def _distributed(c: _Checks, cfg: Config) -> None:
    dist = cfg.distributed
    c.choice("distributed.backend", dist.backend, BACKENDS)
    if dist.backend == "fsdp2":
        c.need(
            cfg.train.mixed_precision != "fp16",
            "train.mixed_precision: fp16 needs loss scaling, which the fsdp2 backend does not do; use bf16 (or no)",
        )
    c.need(
        not dist.cpu_offload or dist.backend == "fsdp2",
        f"distributed.cpu_offload is the fsdp2 backend's (distributed.backend is {dist.backend}; deepspeed has "
        "offload_optimizer and offload_params)",
    )
    c.need(dist.zero_stage in (2, 3), f"distributed.zero_stage: must be 2 or 3, got {dist.zero_stage}")
    c.need(
        not (dist.offload_optimizer or dist.offload_params) or dist.backend == "deepspeed",
        f"distributed.offload_optimizer / offload_params are the deepspeed backend's (distributed.backend is "
        f"{dist.backend}; fsdp2 has cpu_offload)",
    )
    c.need(
        not dist.offload_params or dist.zero_stage == 3,
        "distributed.offload_params: parameters are partitioned (and offloadable) with zero_stage 3 only",
    )


def _validation(c: _Checks, cfg: Config) -> None:
    v = cfg.validation
    c.need(all(p.strip() for p in v.prompts), "validation.prompts: prompts must not be empty strings")
    c.at_least("validation.seed", v.seed, 0)
    c.at_least("validation.every", v.every, 0, " (0 = only at the end)")
    c.mult32("validation.height", v.height)
    c.mult32("validation.width", v.width)
    c.frames("validation.num_frames", v.num_frames)
    c.need(v.fps > 0, f"validation.fps: must be > 0, got {v.fps}")
    c.need(
        v.steps >= 2,
        "validation.steps: must be >= 2 (the LTX-2 scheduler stretches sigmas to its terminal "
        f"value; one step gives NaN), got {v.steps}",
    )
    for key in ("guidance_scale", "audio_guidance_scale", "stg_scale", "modality_scale"):
        c.at_least(f"validation.{key}", getattr(v, key), 0)
    c.need(
        v.stg_scale == 0 or (v.stg_blocks and all(b >= 0 for b in v.stg_blocks)),
        f"validation.stg_blocks: STG needs block indices >= 0, got {v.stg_blocks}",
    )
    c.need(
        0.0 <= v.guidance_rescale <= 1.0, f"validation.guidance_rescale: must be in [0, 1], got {v.guidance_rescale}"
    )
    c.need(
        all(0.0 < x < 1.0 for x in v.loss_sigmas),
        f"validation.loss_sigmas: each must be in (0, 1), got {v.loss_sigmas}",
    )
    c.at_least("validation.loss_clips", v.loss_clips, 1)
    c.choice("validation.video_decoder", v.video_decoder, VIDEO_DECODERS)
    if v.video_decoder == "diffusion" and not c.errors:
        c.need(
            _variant(cfg.model.variant).has("video_diffusion_decoder"),
            f"validation.video_decoder=diffusion: model.variant {cfg.model.variant} "
            f"({_variant(cfg.model.variant).version}) has no diffusion video decoder (LTX-2.5 has one); "
            "set validation.video_decoder=conv",
        )
    for key, needed_by in (("images", "i2av"), ("reference_videos", "ic_lora"), ("audios", "a2v"), ("videos", "v2a")):
        given = getattr(v, key)
        c.need(
            not given or len(given) == len(v.prompts),
            f"validation.{key}: one per prompt ({len(v.prompts)} prompt(s)), got {len(given)}",
        )
        c.need(
            not v.prompts or given or cfg.strategy.name != needed_by,
            f"validation.{key}: strategy.name={needed_by} samples each validation prompt from its own "
            f"{key[:-1].replace('_', ' ')}: give one per prompt (or no validation.prompts)",
        )
    c.need(
        not (v.audios and v.videos),
        "validation: audios (a2v) and videos (v2a) cannot both be given: one modality is generated",
    )


def _tracker(c: _Checks, cfg: Config) -> None:
    tr = cfg.tracker
    names = [n.strip() for n in tr.backend.split(",")]
    for name in names:  # one, or several joined by commas (wandb,tensorboard)
        c.choice("tracker.backend", name, TRACKER_BACKENDS)
    c.need("none" not in names or len(names) == 1, f"tracker.backend: 'none' cannot be combined, got {tr.backend!r}")
    c.choice("tracker.mode", tr.mode, WANDB_MODES)
    c.need(bool(tr.project), "tracker.project: must not be empty")


def _memory(c: _Checks, cfg: Config) -> None:
    m = cfg.memory
    for name in m.fp8_frozen:
        c.choice("memory.fp8_frozen", name, FP8_COMPONENTS)
    c.need(
        not ("transformer" in m.fp8_frozen and cfg.train.method == "full"),
        "memory.fp8_frozen: transformer is stored in FP8 only as the frozen base of a LoRA; train.method=full "
        "trains every transformer weight (float32 master weights): drop transformer from the list",
    )
    backend, why = (
        cfg.distributed.backend,
        {
            "fsdp2": "the FP8 layers re-cast FSDP2's gathered parameters in place; only checked on CPU",
            "deepspeed": "the DeepSpeed engine casts the whole model to train.mixed_precision's dtype",
        },
    )
    c.need(
        not ("transformer" in m.fp8_frozen and backend != "ddp"),
        f"memory.fp8_frozen: transformer with distributed.backend={backend} is not supported yet "
        f"({why.get(backend, 'untested')}): use distributed.backend=ddp, or drop transformer from memory.fp8_frozen",
    )
    c.at_least("memory.block_swap", m.block_swap, 0)
    c.need(
        m.block_swap == 0 or cfg.train.gradient_checkpointing,
        "memory.block_swap: saves memory only with train.gradient_checkpointing=true (without it autograd keeps "
        "every block's weights for backward)",
    )
    c.need(
        m.block_swap == 0 or cfg.distributed.backend == "ddp",
        f"memory.block_swap: swaps whole blocks between host and GPU, with the ddp backend only; "
        f"distributed.backend={cfg.distributed.backend} already shards the blocks (use its offload options)",
    )
    c.need(
        not m.activation_offload or cfg.train.gradient_checkpointing,
        "memory.activation_offload: offloads the activations gradient checkpointing keeps; set "
        "train.gradient_checkpointing=true",
    )
