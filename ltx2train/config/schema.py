"""The recipe schema: one dataclass per recipe section, and the value sets. Each section's docstring (its
``Fields:`` block) is the one description of its fields: ``config/reference.py`` makes docs/config-reference.md from
it, and a test fails when a field has no doc there.

Only the standard library and ``omegaconf`` are imported here (no torch): a recipe is checked before anything
heavy loads.

Over 400 lines: one module on purpose. It is declarations: a dataclass per recipe section, with the field docs in
their docstrings (the single source the reference is generated from).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from omegaconf import MISSING

from ltx2train.utils.errors import UserError

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
# List keys whose entries hold paths: the entries' path fields, resolved like PATH_KEYS.
ENTRY_PATH_KEYS = {"data.datasets": ("metadata", "root", "cache_dir")}


class ConfigError(UserError):
    """A problem with a recipe or an override, worded for the user."""


# --------------------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------------------


@dataclass
class ModelConfig:
    """Which LTX-2 model to fine-tune and where its weights live.

    Fields:
        variant: shipped variant name (``ltx2-19b``, ``ltx2.3-22b``, ``ltx2.5``; ``tiny``, ``tiny-2.3``,
            ``tiny-2.5``) or the path of a variant JSON file (same format as ``ltx2train/models/variants/*.json``).
            The checkpoint's version is read from its files and must be this variant's.
        checkpoint: the weights: a directory of split component files, the official single
            ``.safetensors`` file, or a diffusers-layout directory.  Required.
        text_encoder: local Gemma directory (``config.json`` + tokenizer + weights): Gemma 3 12B for LTX-2 and
            2.3, LTX's Gemma 4 12B for 2.5.  Required.
        distilled: load the distilled transformer file of a split directory instead of the dev one.
        dtype: storage dtype of the frozen weights: ``float32`` | ``bfloat16`` | ``float16``.
    """

    variant: str = "ltx2-19b"
    checkpoint: str = MISSING
    text_encoder: str = MISSING
    distilled: bool = False
    dtype: str = "bfloat16"


ASPECT_RATIOS = (1 / 3, 1 / 2, 9 / 16, 2 / 3, 3 / 4, 1.0, 4 / 3, 3 / 2, 16 / 9, 2.0, 3.0)
CROPS = ("center", "random", "letterbox")
WINDOWS = ("first", "random", "spread")
OPTIMIZERS = ("adamw", "adamw8bit")
VIDEO_DECODERS = ("conv", "diffusion")  # validation.video_decoder
FP8_COMPONENTS = ("text_encoder", "connectors", "video_vae", "audio_vae", "transformer")
EXTRAS = ("first_frame", "reference", "empty_prompt")  # what prepare stores beyond latents + text, on request


@dataclass
class DatasetSource:
    """One more dataset trained with the first one (``data.datasets``); every other data setting is shared.

    Fields:
        metadata: the dataset's metadata (same formats and columns as ``data.metadata``).  Required.
        cache_dir: the dataset's own cache (as ``data.cache_dir``), distinct from every other dataset's.  Required.
        root: base directory for its relative video paths; ``None`` means its metadata file's directory.
        repeats: how many times each of its clips is drawn per epoch (>= 1).
        weight: its share of each epoch's samples (> 0), relative to the other datasets' weights; ``None`` = no
            weighting.  Either every dataset (the first one included) has a weight or none has.
    """

    metadata: str = MISSING
    cache_dir: str = MISSING
    root: Optional[str] = None
    repeats: int = 1
    weight: Optional[float] = None


@dataclass
class DataConfig:
    """The training clips, how they are sized, and how they are batched.

    Fields:
        metadata: one row per clip, a video path and a caption: csv / json / jsonl, parquet, or a ``datasets``
            directory (``Dataset.save_to_disk``); a row without a caption takes the sidecar ``NAME.txt`` beside its
            video.  Required.
        video_column: name of the metadata column holding the video path.
        caption_column: name of the metadata column holding the caption.
        audio_column: optional column with an external audio file per row (wav, flac, m4a, ...): where a row
            names one, its audio comes from that file (aligned to the video's first frame) instead of the
            video's own audio stream; empty cells keep the video's audio.
        image_column: optional column with a still image per row: a row with no video takes it as a 1-frame
            clip (``frame_buckets`` must include 1).
        reference_video_column: optional column with the IC-LoRA reference video (a depth map, pose, edges ...)
            of each row; required by ``extras: [reference]``.
        root: base directory for relative video paths; ``None`` means the metadata file's directory.
        cache_dir: where ``prepare`` writes, and ``train`` reads, the precomputed latents and text
            embeddings.  Required.
        repeats: how many times each clip of the first dataset (``metadata`` / ``cache_dir`` / ``root``) is drawn
            per epoch (>= 1); with ``weight`` set everywhere, repeats must stay 1.
        weight: the first dataset's share of each epoch's samples (> 0), relative to the weights of
            ``datasets``; ``None`` = no weighting.  Either every dataset has a weight or none has.
        datasets: further datasets trained with the first one (:class:`DatasetSource`: ``metadata``,
            ``cache_dir``, ``root``, ``repeats``, ``weight``, each meaning what the fields above mean for the
            first); every other data setting here is shared.  Each ``cache_dir`` must be distinct.
        height: clip height in pixels, a positive multiple of 32; null (with ``width`` null): dynamic
            resolution, every clip keeps its aspect ratio and goes to the nearest of the buckets below.
        width: clip width in pixels, a positive multiple of 32; null with ``height``.
        max_pixels: dynamic resolution: the pixel budget of a frame (height x width); buckets are the largest
            multiples of 32 within it for each of ``aspect_ratios``.
        aspect_ratios: dynamic resolution: the width / height ratios buckets are made for.
        frame_buckets: frame counts clips may have (8k+1 each); a clip gets the most frames it has. Empty: only
            ``num_frames``. Include 1 to train on images (``.png .jpg .jpeg .webp .bmp`` rows: 1-frame clips).
        buckets: explicit buckets ``HEIGHTxWIDTHxFRAMES`` (e.g. ``512x768x121``); when given, they replace the
            generated ones (and a fixed height/width).
        crop: how a clip is fitted to its bucket: ``center`` (cover, centre crop), ``random`` (cover, a crop
            drawn once per clip), ``letterbox`` (fit inside, black borders).
        window: which part of a clip becomes a sample: ``first`` (its start), ``random`` (``max_windows`` windows
            at random starts are cached; each epoch trains one of them, a new draw per epoch) or ``spread`` (up to
            ``max_windows`` evenly spaced windows that do not overlap, each its own sample: a long clip gives several).
        max_windows: ``random`` / ``spread``: windows per clip at most.
        extras: what ``prepare`` also stores for later strategies: ``first_frame`` (the first frame encoded alone,
            as inference encodes an image-to-video condition), ``reference`` (the reference video's latents at
            ``1 / reference_downscale`` of the bucket's size, IC-LoRA), ``empty_prompt`` (the empty caption's
            text features, once per cache: caption dropout).
        reference_downscale: ``reference``: the reference video is encoded at the bucket's height and width
            divided by this (DiffSynth's ``in_context_downsample_factor``); recorded in the cache.
        num_frames: frames per clip; of the form 8k+1 (9, 17, ..., 121).
        fps: frame rate clips are resampled to (also sets the audio duration).
        with_audio: also train the audio branch (a clip without an audio track is kept for its video, its
            audio out of the loss; short audio is padded and the padding out of the loss).
        max_sequence_length: Gemma token budget per caption.
        batch_size: clips per step per process.
        num_workers: DataLoader worker processes (0 = load in the main process).
        shuffle: shuffle the clips every epoch.
    """

    metadata: str = MISSING
    video_column: str = "video"
    caption_column: str = "caption"
    audio_column: Optional[str] = None
    image_column: Optional[str] = None
    reference_video_column: Optional[str] = None
    root: Optional[str] = None
    cache_dir: str = MISSING
    repeats: int = 1
    weight: Optional[float] = None
    datasets: List[DatasetSource] = field(default_factory=list)
    height: Optional[int] = 512
    width: Optional[int] = 768
    max_pixels: int = 768 * 512
    aspect_ratios: List[float] = field(default_factory=lambda: list(ASPECT_RATIOS))
    frame_buckets: List[int] = field(default_factory=list)
    buckets: List[str] = field(default_factory=list)
    crop: str = "center"
    window: str = "first"
    max_windows: int = 4
    extras: List[str] = field(default_factory=list)
    reference_downscale: int = 2
    num_frames: int = 121
    fps: float = 24.0
    with_audio: bool = True
    max_sequence_length: int = 1024
    batch_size: int = 1
    num_workers: int = 2
    shuffle: bool = True


def dataset_sources(data: DataConfig) -> List[DatasetSource]:
    """Every dataset of ``data``: the first one (its top-level fields), then ``data.datasets``."""
    first = DatasetSource(
        metadata=data.metadata, cache_dir=data.cache_dir, root=data.root, repeats=data.repeats, weight=data.weight
    )
    return [first, *data.datasets]


@dataclass
class LoRAConfig:
    """Low-rank adapters inserted into the transformer.

    Fields:
        rank: adapter rank r (typical 8-128).
        alpha: scaling numerator; the update is scaled by ``alpha / rank``. ``null``: alpha = rank (scale 1,
            DiffSynth's and PEFT-by-default's rule), so ``lora.rank=64`` alone keeps the update's scale; the recipes
            set 32 with rank 32, as Lightricks' trainer does, which is the same scale.
        dropout: dropout on the adapter input, in [0, 1).
        target_modules: module-name suffixes that receive an adapter (e.g. ``to_q``, ``ff.net.0.proj``); on the
            command line also one comma-separated string (``lora.target_modules=to_k,to_q,to_v,to_out.0``).
        init_from: start from an existing LoRA file instead of zero (any dialect: official/ComfyUI with or
            without ``.alpha``, diffusers, DiffSynth, Lightricks' trainer): at step 0 the model acts as with that
            file in its own consumer. Its ranks must equal ``rank`` and its modules be among ``target_modules``.
            Ignored when resuming from a checkpoint.
        preset: LoRA files (any dialect) merged into the frozen base before training starts, at strength 1:
            the new adapter (or full fine-tune) learns on top of them (DiffSynth's ``preset_lora_path``). Checkpoints
            hold the new LoRA only; ``sample`` from the recipe merges the presets again, so it reproduces validation.
        gate_logits: also adapt LTX-2.3's attention gates (``to_gate_logits``: one logit per head, ``2 * sigmoid``
            scales each head's output). Off by default: a gate LoRA can switch whole heads off or saturate them, the
            failure other trainers report as quality that degrades after a few hundred steps and NaN gate weights
            that render black video. Naming ``to_gate_logits`` in ``target_modules`` is refused; this is the switch.
            LTX-2.0 has no gates (an error there).
    """

    rank: int = 32
    alpha: Optional[float] = 32.0
    dropout: float = 0.0
    target_modules: List[str] = field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"])
    init_from: Optional[str] = None
    preset: List[str] = field(default_factory=list)
    gate_logits: bool = False


@dataclass
class OptimizerConfig:
    """AdamW and its learning-rate schedule.

    Fields:
        name: ``adamw`` (torch) or ``adamw8bit`` (bitsandbytes' 8-bit AdamW: the two moments of every tensor of
            4096 elements or more stored as blockwise-quantised uint8, a quarter of the state's memory; needs
            ``pip install bitsandbytes``).
        lr: peak learning rate (after warmup).
        betas: AdamW ``(beta1, beta2)``, each in [0, 1).
        weight_decay: decoupled weight decay (>= 0).
        eps: AdamW epsilon (> 0).
        scheduler: shape after warmup: ``constant`` | ``linear`` (to 0) | ``cosine`` (to 0).
        warmup_steps: linear warmup steps from 0 to ``lr``.
        max_grad_norm: gradient-norm clipping threshold; 0 disables clipping.
        fused: torch's fused AdamW (one kernel updates every tensor, instead of a loop of kernels per tensor):
            ``null`` = on a GPU, off elsewhere; ``true`` / ``false`` to choose. Not for ``adamw8bit``.
    """

    name: str = "adamw"
    lr: float = 1e-4
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.01
    eps: float = 1e-8
    scheduler: str = "cosine"
    warmup_steps: int = 100
    max_grad_norm: float = 1.0
    fused: Optional[bool] = None


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

    logit_mean: float = 0.0
    logit_std: float = 1.0
    shift_base: float = 0.95
    shift_max: float = 2.05
    shift_base_tokens: int = 1024
    shift_max_tokens: int = 4096
    video_loss_weight: float = 1.0
    audio_loss_weight: float = 1.0
    use_cross_timestep: bool = True


STRATEGIES = ("t2av", "t2v", "i2av", "ic_lora", "a2v", "v2a")
ROLES = ("generated", "given", "none")


@dataclass
class StrategyConfig:
    """How a cached batch becomes a loss: what each modality is, and which conditions apply.

    A strategy is a preset of per-modality roles and conditions:

        t2av      video generated, audio generated
        t2v       video generated, audio none (not run: the transformer's audio-to-video attention is off)
        i2av      t2av + the first latent frame given (clean, timestep 0, no loss) with ``first_frame_probability``
        ic_lora   video generated + the reference video's latents as extra tokens (timestep 0, no loss, positions
                  scaled to the target grid), audio none
        a2v       video generated, audio given (clean, timestep 0, no loss)
        v2a       video given, audio generated

    Fields:
        name: one of the presets above.
        video: ``generated`` | ``given``; null: the preset's.
        audio: ``generated`` | ``given`` | ``none``; null: the preset's (e.g. ``ic_lora`` with audio generated).
        first_frame_probability: i2av: the probability that a sample's first latent frame is given (else the
            whole clip is generated, as in t2av), in [0, 1]. The cache's ``first_frame`` latents (the frame encoded
            alone, as inference encodes the image) when it has them, else the clip's own first latent frame.
        caption_dropout: the probability that a sample trains with the empty prompt (the cache's
            ``empty_prompt`` features: ``data.extras`` must include it), in [0, 1).
        independent_sigma: video and audio draw their own noise level (default: one per sample for both).

    With ``audio: none`` nothing trains the audio branch (its self/cross attention and feed-forward, the
    video-to-audio attention, the audio projections): a LoRA puts no adapter there and full fine-tuning freezes it.
    """

    name: str = "t2av"
    video: Optional[str] = None
    audio: Optional[str] = None
    first_frame_probability: float = 0.5
    caption_dropout: float = 0.0
    independent_sigma: bool = False


@dataclass
class TrainConfig:
    """The training loop.

    Fields:
        output_dir: run directory (checkpoints, resolved config, logs, samples).  Required.
        method: what is trained: ``lora`` (adapters on the frozen transformer, see ``lora``) | ``full`` (every
            transformer weight, kept in float32 with its optimizer state; the forward in ``mixed_precision``).
        trainable: the components trained by ``method``: ``[transformer]`` (the DiT) or ``[transformer,
            connectors]`` (the DiT and the two text-connector transformers: LoRA adapters on both, or both fully
            trained; the connectors then run with their graph in the step, the text projection before them stays
            frozen). Exports hold both: connector modules in ``lora.safetensors``, ``text_encoder_post_modules
            .safetensors`` beside ``transformer.safetensors``.
        max_steps: optimizer steps to train for.
        num_epochs: train for this many passes over the data instead: ``max_steps`` becomes ``num_epochs`` x the
            optimizer steps of one epoch (batches per process / ``gradient_accumulation_steps``), printed at start.
        seed: global random seed (>= 0).
        gradient_accumulation_steps: micro-batches per optimizer step.
        gradient_checkpointing: recompute transformer activations in backward (saves memory).
        mixed_precision: autocast mode: ``no`` | ``bf16`` | ``fp16``; bf16 only where the device has it.
        checkpoint_every: save a checkpoint every N steps; 0 = only at the end.
        keep_last: number of checkpoints kept (older ones are deleted); >= 1.
        resume: ``latest`` (newest checkpoint in output_dir, if any) | ``none`` | a checkpoint directory.
        log_every: log metrics every N steps (and print a line, when stderr is not a terminal: a log file).
    """

    output_dir: str = MISSING
    method: str = "lora"
    trainable: List[str] = field(default_factory=lambda: ["transformer"])
    max_steps: int = 2000
    num_epochs: Optional[int] = None
    seed: int = 42
    gradient_accumulation_steps: int = 1
    gradient_checkpointing: bool = True
    mixed_precision: str = "bf16"
    checkpoint_every: int = 250
    keep_last: int = 3
    resume: str = "latest"
    log_every: int = 10


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

    backend: str = "ddp"
    reshard_after_forward: bool = True
    cpu_offload: bool = False
    zero_stage: int = 2
    offload_optimizer: bool = False
    offload_params: bool = False


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
        images: one image per prompt (or none): the sample's first frame, as ``strategy.name=i2av`` trains.
        reference_videos: one video per prompt (or none): the reference an IC-LoRA (``strategy.name=ic_lora``)
            transforms, read over the sample's frames and encoded at 1 / ``data.reference_downscale`` of its size.
        audios: one file per prompt (or none) whose audio is given, as ``strategy.name=a2v`` trains: the sample's
            video is generated to it.
        videos: one video per prompt (or none), given, as ``strategy.name=v2a`` trains: the audio is generated.
        video_decoder: what decodes the sample's video latents: ``conv`` (the video VAE's decoder) or ``diffusion``
            (LTX-2.5's diffusion video decoder, ``vae/ltx-2.5-video-vae-bf16.safetensors`` in the release
            directory, ``video_vae_diffusion_decoder.safetensors`` in a repackaged one; its noise seeded by ``seed``).
    """

    prompts: List[str] = field(default_factory=list)
    images: List[str] = field(default_factory=list)
    reference_videos: List[str] = field(default_factory=list)
    audios: List[str] = field(default_factory=list)
    videos: List[str] = field(default_factory=list)
    seed: int = 42
    every: int = 250
    at_start: bool = False
    height: int = 512
    width: int = 768
    num_frames: int = 121
    fps: float = 24.0
    steps: int = 30
    guidance_scale: float = 3.0
    audio_guidance_scale: float = 7.0
    stg_scale: float = 1.0
    stg_blocks: List[int] = field(default_factory=lambda: [29])
    modality_scale: float = 3.0
    guidance_rescale: float = 0.7
    negative_prompt: str = ""
    loss_sigmas: List[float] = field(default_factory=lambda: [0.25, 0.5, 0.75])
    loss_clips: int = 4
    video_decoder: str = "conv"


@dataclass
class TrackerConfig:
    """Experiment tracking.

    Fields:
        backend: ``none`` | ``wandb`` | ``tensorboard``, or several joined by commas (``wandb,tensorboard``).
        project: tracker project name.
        run_name: run name; ``None`` lets the tracker (or the output dir name) decide.
        entity: wandb entity (team / user); ``None`` = the default one.
        mode: wandb mode: ``online`` | ``offline`` | ``disabled``.
    """

    backend: str = "none"
    project: str = "ltx2train"
    run_name: Optional[str] = None
    entity: Optional[str] = None
    mode: str = "offline"


@dataclass
class MemoryConfig:
    """Trading speed for memory: what is stored smaller, kept in host memory, or recomputed.

    Fields:
        fp8_frozen: frozen components stored as float8_e4m3fn and computed in bfloat16 (diffusers' layerwise
            casting: each layer's weights are cast up just before it runs): any of ``text_encoder``,
            ``connectors``, ``video_vae``, ``audio_vae``, ``transformer``. ``transformer`` only as the frozen base
            of a LoRA (the adapters stay in float32). Norms, embeddings, the patch projections and Gemma's tied
            embedding stay in their dtype.
        block_swap: transformer blocks kept in (pinned) host memory and brought to the GPU one block ahead of
            use, on a side stream, so that the copy overlaps compute (0 = off). The last N blocks, with ``ddp``
            (``fsdp2`` and ZeRO-3 already shard the blocks) and ``train.gradient_checkpointing``. Under LoRA the
            frozen base is swapped and the adapters stay on the GPU; under full fine-tuning the float32 master
            weights are swapped, and their gradients and optimizer state stay in host memory, where the optimizer
            steps them.
        activation_offload: with ``train.gradient_checkpointing``: the activations kept for backward (each
            block's inputs) in host memory instead of on the GPU.
        tiled_vae: encode (prepare) and decode (validation) video in overlapping tiles, DiffSynth's tile sizes:
            the VAE's peak memory no longer grows with the frame size.
    """

    fp8_frozen: List[str] = field(default_factory=list)
    block_swap: int = 0
    activation_offload: bool = False
    tiled_vae: bool = False


@dataclass
class Config:
    """A complete training configuration (one field per recipe section).

    Fields:
        model: :class:`ModelConfig` -- which model and where its weights are.
        data: :class:`DataConfig` -- clips, sizes, batching.
        lora: :class:`LoRAConfig` -- adapter shape and placement.
        optimizer: :class:`OptimizerConfig` -- AdamW and learning-rate schedule.
        objective: :class:`ObjectiveConfig` -- flow-matching loss.
        strategy: :class:`StrategyConfig` -- what is generated, what is given, which conditions.
        train: :class:`TrainConfig` -- training loop, checkpoints, resume.
        distributed: :class:`DistributedConfig` -- how training is spread over processes.
        validation: :class:`ValidationConfig` -- sampling during training.
        memory: :class:`MemoryConfig` -- FP8 storage, block swap, activation offload, tiled VAE.
        tracker: :class:`TrackerConfig` -- experiment tracking.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
