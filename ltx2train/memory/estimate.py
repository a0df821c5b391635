"""The per-GPU memory of a training recipe, estimated without any weights (``ltx2train inspect memory``).

Everything is counted from the variant spec: modules are built on the meta device (no memory), the method is
applied there (PEFT adapters, float32 trained weights), and the counts below follow from their parameters.

- Weights: the frozen base in ``model.dtype`` (layers ``memory.fp8_frozen`` stores in float8: 1 byte, as
  ``memory.fp8.store_fp8`` leaves them), the trained weights in float32 -- under DeepSpeed the module holds them in
  the mixed-precision dtype and the optimizer a float32 master copy -- the connectors (run in every step) and, on the
  main process, the validation decoders (video VAE, audio VAE, float32 vocoder).
- Gradients in the trained weights' dtype; optimizer state: AdamW 2 x float32 per element plus a float32 ``step``
  per tensor; adamw8bit (bitsandbytes): 2 bytes per element and a float32 absmax per 256-element block for tensors
  of 4096 elements or more, 2 x float32 below.
- Sharding over the world size W: fsdp2 splits every parameter into dim-0 chunks of ceil(rows / W) rows (and with
  it gradients and optimizer state), and gathers one block at a time (two: the next one is prefetched) plus the
  root's parameters in the compute dtype; ZeRO-2 divides gradients, master weights and optimizer state, ZeRO-3 the
  parameters too. CPU offload options move their parts to host memory. DDP over W > 1 keeps gradient buckets as
  large as the gradients; ZeRO keeps a reduce bucket of 5e8 elements.
- Block swap: the frozen weights of the last N blocks in host memory; on the device at most three block copies
  (with gradient checkpointing: the one running, the next, the last one kept for backward) -- without
  checkpointing autograd keeps every copy until backward, so nothing is saved during the step.
- Activations are simulated, not guessed: one training step of a two-block transformer of the variant runs on
  fake tensors (``FakeTensorMode``: shapes and dtypes, no memory) at the token counts of the largest bucket, with
  the recipe's method, precision and checkpointing, while a dispatch mode counts the bytes of live tensor storages.
  Blocks are identical, so what block 0 leaves alive at the end of the forward is the per-block cost (times
  ``num_layers``), the rest less the two blocks is the cost outside the blocks, and the backward's excess over the
  end of the forward (recomputation, gradients of activations) is paid once. Tokens: video (F - 1) / 8 + 1 x H / 32 x W / 32,
  audio 25 per second, text ``data.max_sequence_length``. Activation offload moves what autograd saves to the host.
- Validation: a no-grad forward at the validation size (CFG doubles the batch) and the video VAE decode, simulated
  the same way; prepare (its own command): Gemma and the VAE encode of the largest bucket.

The simulation runs PyTorch's CPU kernels: on a GPU the attention kernel (flash / memory-efficient) saves the same
tensors (q, k, v, output, logsumexp), and allocator rounding and CUDA workspaces are not counted.
"""

from __future__ import annotations

import contextlib
import math
import os
import weakref
from dataclasses import dataclass, field

import torch

from ltx2train.memory.fp8 import module_bytes

GIB, MIB = 2**30, 2**20
ADAMW8BIT_MIN_SIZE, ADAMW8BIT_BLOCK = 4096, 256  # bitsandbytes' min_8bit_size and blockwise quantisation block
ZERO_REDUCE_BUCKET = 500_000_000  # DeepSpeed's default reduce_bucket_size (elements)
_MIXED = {"bf16": torch.bfloat16, "fp16": torch.float16}


# ---------------------------------------------------------------------------------------------- the result
@dataclass
class MemoryEstimate:
    """Bytes per GPU. ``parts``: every part on the device; ``phases``: what is live together at each peak (their
    maximum over the training phases is ``total_bytes``; ``prepare`` is its own command); ``host``: what the
    offload options keep in host memory instead."""

    total_bytes: int
    parts: dict[str, int]
    phases: dict[str, int]
    host: dict[str, int]
    tokens: dict
    world_size: int
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"total_bytes": self.total_bytes, "parts": self.parts, "phases": self.phases, "host": self.host,
                "tokens": self.tokens, "world_size": self.world_size, "notes": self.notes}


# ---------------------------------------------------------------------------------------------- tokens
@dataclass(frozen=True)
class Tokens:
    """What one step of the transformer sees: ``batch`` clips of ``video`` + ``audio`` + ``text`` tokens."""

    batch: int
    frames: int  # latent grid of the video tokens
    height: int
    width: int
    audio: int
    text: int
    fps: float

    @property
    def video(self) -> int:
        return self.frames * self.height * self.width

    def describe(self) -> dict:
        return {"batch": self.batch, "video": self.video, "audio": self.audio, "text": self.text,
                "latent_grid": [self.frames, self.height, self.width], "fps": self.fps}

    @classmethod
    def described(cls, d: dict) -> "Tokens":
        """The inverse of ``describe`` (an estimate's ``tokens``)."""
        return cls(d["batch"], *d["latent_grid"], d["audio"], d["text"], d["fps"])


def tokens_for(height: int, width: int, frames: int, fps: float, text: int, batch: int, transformer_config) -> Tokens:
    """Token counts of a clip: one video token per latent position (patch size 1), audio latents at
    ``sampling_rate / hop / scale`` per second (25 for LTX-2), as the pipeline and prepare compute them."""
    t_scale, h_scale, w_scale = transformer_config["vae_scale_factors"]
    per_second = (transformer_config["audio_sampling_rate"] / transformer_config["audio_hop_length"]
                  / transformer_config["audio_scale_factor"])
    return Tokens(batch, (frames - 1) // t_scale + 1, height // h_scale, width // w_scale,
                  max(1, round(frames / fps * per_second)), text, fps)


def largest_bucket(cfg, transformer_config) -> tuple[str, Tokens]:
    """The bucket whose step costs the most: the most video tokens, audio weighted by its narrower width."""
    from ltx2train.data import buckets

    ratio = transformer_config["audio_num_attention_heads"] * transformer_config["audio_attention_head_dim"] / (
        transformer_config["num_attention_heads"] * transformer_config["attention_head_dim"])
    candidates = [(b.name, tokens_for(b.height, b.width, b.frames, cfg.data.fps, cfg.data.max_sequence_length,
                                      cfg.data.batch_size, transformer_config)) for b in buckets.from_config(cfg.data)]
    return max(candidates, key=lambda c: c[1].video + ratio * c[1].audio)


# ---------------------------------------------------------------------------------------------- dtypes
@dataclass(frozen=True)
class Precision:
    """Where each kind of weight lives and in which dtype, for a recipe's method, backend and precision."""

    frozen: torch.dtype  # the frozen base as stored on the module
    trained: torch.dtype  # trained weights as stored on the module (and their gradients)
    master: torch.dtype | None  # DeepSpeed: the optimizer's float32 copy of the trained weights
    compute: torch.dtype | None  # autocast dtype (None: none); FSDP2 also gathers parameters in it
    gathered: torch.dtype | None  # fsdp2: the dtype parameters are all-gathered in (None: as stored)


def precision_of(cfg) -> Precision:
    from ltx2train.models.specs import torch_dtype

    mixed = _MIXED.get(cfg.train.mixed_precision)
    base = torch_dtype(cfg.model.dtype)
    if cfg.distributed.backend == "deepspeed" and mixed is not None:  # the engine casts the whole module
        return Precision(mixed, mixed, torch.float32, None, None)
    gathered = mixed if cfg.distributed.backend == "fsdp2" else None
    return Precision(base, torch.float32, None, mixed, gathered)


# ---------------------------------------------------------------------------------------------- the meta model
def build_transformer(cfg, spec, *, frozen: torch.dtype, trained: torch.dtype, fp8: bool, num_layers: int = 1):
    """The recipe's transformer on the meta device with ``num_layers`` blocks, the method applied: LoRA adapters
    (as ``training/methods/lora.py`` adds them) or every weight trained, in the given dtypes."""
    from ltx2train.models.specs import ComponentSpec

    module = ComponentSpec(spec.name, spec.class_name, dict(spec.config, num_layers=num_layers)).build(meta=True)
    module.to(frozen)
    if fp8:
        from ltx2train.memory.fp8 import store_fp8

        store_fp8(module, "transformer", compute_dtype=_compute_of(frozen))
    if cfg.train.method == "full":
        module.requires_grad_(True)
        for p in module.parameters():
            p.data = p.data.to(trained)
        return module
    from accelerate import init_empty_weights

    from ltx2train.models.adapters import training_lora_config

    module.requires_grad_(False)
    with init_empty_weights():
        module.add_adapter(training_lora_config(cfg.lora))
    for name, p in module.named_parameters():
        if "lora_" in name:
            p.data = p.data.to(trained)
            p.requires_grad_(True)
    return module


def _compute_of(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in (torch.bfloat16, torch.float16) else torch.bfloat16


@dataclass
class WeightCounts:
    """Parameter bytes of the transformer, split into block 0 (every block alike) and the rest."""

    block_frozen: int
    block_trained: int
    outside_frozen: int
    outside_trained: int
    block_trained_numels: list[int]  # per trained tensor, for the optimizer state
    outside_trained_numels: list[int]
    block_frozen_shapes: list[tuple]  # (shape, element size) for sharding
    block_trained_shapes: list[tuple]
    outside_frozen_shapes: list[tuple]
    outside_trained_shapes: list[tuple]
    block_fp8_cast: int  # bytes in the compute dtype of block 0's float8 layers (0 without FP8)


def count_weights(module: torch.nn.Module) -> WeightCounts:
    c = WeightCounts(0, 0, 0, 0, [], [], [], [], [], [], 0)
    for name, p in module.named_parameters():
        where = "block" if name.startswith("transformer_blocks.0.") else "outside"
        kind = "trained" if p.requires_grad else "frozen"
        nbytes = p.numel() * p.element_size()
        setattr(c, f"{where}_{kind}", getattr(c, f"{where}_{kind}") + nbytes)
        getattr(c, f"{where}_{kind}_shapes").append((tuple(p.shape), p.element_size()))
        if p.requires_grad:
            getattr(c, f"{where}_trained_numels").append(p.numel())
        if where == "block" and p.dtype == torch.float8_e4m3fn:
            c.block_fp8_cast += p.numel() * 2
    return c


def _shard(shapes: list[tuple], world: int) -> int:
    """Bytes of one rank's FSDP2 shards: dim-0 chunks of ceil(rows / W), padded alike on every rank."""
    total = 0
    for shape, size in shapes:
        rows = shape[0] if shape else 1
        total += math.ceil(rows / world) * math.prod(shape[1:]) * size
    return total


def optimizer_state_bytes(numels: list[int], name: str) -> int:
    """AdamW: exp_avg + exp_avg_sq in float32 and a float32 ``step`` per tensor; adamw8bit as bitsandbytes."""
    if name == "adamw":
        return sum(2 * n * 4 + 4 for n in numels)
    if name == "adamw8bit":
        return sum(2 * n + 2 * 4 * math.ceil(n / ADAMW8BIT_BLOCK) if n >= ADAMW8BIT_MIN_SIZE else 2 * n * 4
                   for n in numels) + 2 * 256 * 4  # the two shared quantisation maps
    raise ValueError(f"optimizer.name: unknown optimizer {name!r}; expected adamw or adamw8bit")


# ---------------------------------------------------------------------------------------------- counting live bytes
class LiveBytes(torch.utils._python_dispatch.TorchDispatchMode):
    """Bytes of the tensor storages created under this mode that are still alive (``bytes``) and their maximum
    (``peak``). Storages created while ``tag`` is set carry it (``tagged``); ``forget`` stops counting one
    (gradients, accounted apart). Views share their storage: counted once; views of ``existing`` tensors (the
    weights, the inputs) not at all."""

    def __init__(self, existing=()):
        super().__init__()
        self.bytes = self.peak = 0
        self.tag: str | None = None
        self._live: dict[int, tuple[int, str | None]] = {}
        self._ignored = {t.untyped_storage()._cdata for t in existing}  # storages made before (views of them too)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.track(t)
        return out

    def track(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        key = storage._cdata
        if key in self._live or key in self._ignored:
            return
        self._live[key] = (storage.nbytes(), self.tag)
        self.bytes += storage.nbytes()
        self.peak = max(self.peak, self.bytes)
        weakref.finalize(storage, self._free, key)

    def _free(self, key: int) -> None:
        nbytes, _ = self._live.pop(key, (0, None))
        self.bytes -= nbytes

    def forget(self, t: torch.Tensor) -> None:
        key = t.untyped_storage()._cdata
        self._ignored.add(key)
        self._free(key)

    def tag_of(self, t: torch.Tensor) -> str | None:
        return self._live.get(t.untyped_storage()._cdata, (0, None))[1]

    def tagged(self, tag: str) -> int:
        return sum(n for n, t in self._live.values() if t == tag)


def fake_parameters(module: torch.nn.Module, mode) -> torch.nn.Module:
    """Parameters and buffers as fake CPU tensors of the same shapes and dtypes (no memory)."""
    with mode:
        for sub in module.modules():
            for name, p in list(sub._parameters.items()):
                if p is not None:
                    sub._parameters[name] = torch.nn.Parameter(torch.empty(p.shape, dtype=p.dtype),
                                                               requires_grad=p.requires_grad)
            for name, b in list(sub._buffers.items()):
                if b is not None:
                    sub._buffers[name] = torch.zeros(b.shape, dtype=b.dtype)
    return module


def fake_mode():
    from torch._subclasses.fake_tensor import FakeTensorMode

    return FakeTensorMode(allow_non_fake_inputs=True)


def step_inputs(module, tokens: Tokens, dtype: torch.dtype) -> dict:
    """The transformer's keyword arguments for ``tokens`` (``models/forward.py`` builds them), in ``dtype``."""
    from ltx2train.models.forward import AudioTokens, VideoTokens, transformer_kwargs
    from ltx2train.models.text_encoder import TextContext

    c, b = module.config, tokens.batch
    sigma = torch.rand(b)
    # the connectors' outputs: Gemma's width for LTX-2 (the transformer projects them), the attention widths for 2.3
    video_dim, audio_dim = ((c.caption_channels, c.caption_channels) if c.use_prompt_embeddings
                            else (c.cross_attention_dim, c.audio_cross_attention_dim))
    context = TextContext(torch.randn(b, tokens.text, video_dim, dtype=dtype),
                          torch.randn(b, tokens.text, audio_dim, dtype=dtype), torch.ones(b, tokens.text))
    video = VideoTokens(torch.randn(b, tokens.video, c.in_channels, dtype=dtype),
                        sigma[:, None].expand(b, tokens.video).contiguous(), tokens.frames, tokens.height,
                        tokens.width, tokens.fps)
    audio = AudioTokens(torch.randn(b, tokens.audio, c.audio_in_channels, dtype=dtype), sigma)
    return transformer_kwargs(video, audio, context, sigma, use_cross_timestep=True, device="cpu")


def step_targets(module, tokens: Tokens) -> list[torch.Tensor]:
    """Random float32 velocity targets for ``step_inputs``' video and audio tokens."""
    c = module.config
    return [torch.randn(tokens.batch, tokens.video, c.out_channels),
            torch.randn(tokens.batch, tokens.audio, c.audio_out_channels)]


def _nbytes(tensors) -> int:
    return sum(t.untyped_storage().nbytes() for t in {id(t): t for t in tensors}.values())


@dataclass
class StepActivations:
    """One simulated step (bytes): see the module docstring."""

    inputs: int  # the transformer's inputs and the loss targets
    block: int  # what block 0 leaves alive at the end of the forward (per block)
    outside: int  # the rest alive at the end of the forward
    transient: int  # the peak's excess over the end of the forward (backward working set, recomputation)
    saved_block: int  # what autograd saves for backward, per block / outside (activation offload moves it)
    saved_outside: int
    seconds: float = 0.0

    def at_end_of_forward(self, layers: int) -> int:
        return self.outside + layers * self.block

    def saved(self, layers: int) -> int:
        return self.saved_outside + layers * self.saved_block


def simulate_step(cfg, spec, precision: Precision, tokens: Tokens) -> StepActivations:
    """Forward, loss and backward of the recipe's transformer with two blocks (one if it has one), on fake tensors.
    Two, because the backward's working set reaches its size only where one block's backward meets the next."""
    import time

    started = time.perf_counter()
    mode = fake_mode()
    weights, blocks = precision.gathered or None, min(2, spec.config["num_layers"])
    module = build_transformer(cfg, spec, frozen=weights or precision.frozen, trained=weights or precision.trained,
                               fp8=False, num_layers=blocks)
    module = fake_parameters(module, mode).train()
    if cfg.train.gradient_checkpointing:
        module.enable_gradient_checkpointing()
    with mode:
        kwargs = step_inputs(module, tokens, module.dtype)
        targets = [torch.randn(kwargs["hidden_states"].shape), torch.randn(kwargs["audio_hidden_states"].shape)]
    given = [t for t in [*kwargs.values(), *targets] if isinstance(t, torch.Tensor)]
    inputs = _nbytes(given)
    live, saved = LiveBytes([*module.parameters(), *module.buffers(), *given]), {}
    for p in module.parameters():
        if p.requires_grad:
            p.register_post_accumulate_grad_hook(lambda q: live.forget(q.grad))  # gradients are a part of their own
    block = module.transformer_blocks[0]
    block.register_forward_pre_hook(lambda *_: setattr(live, "tag", None if _in_backward() else "block"))
    block.register_forward_hook(lambda *_: setattr(live, "tag", None))
    params = {p.untyped_storage()._cdata for p in module.parameters()}

    def pack(t):
        key = t.untyped_storage()._cdata
        if key not in params:
            saved[key] = (t.untyped_storage().nbytes(), live.tag_of(t))
        return t

    autocast = torch.autocast("cpu", dtype=precision.compute) if precision.compute else contextlib.nullcontext()
    with mode, live, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with autocast:
            video, audio = module(**kwargs)
            loss = ((video.float() - targets[0]) ** 2).mean() + ((audio.float() - targets[1]) ** 2).mean()
        end, end_block = live.bytes, live.tagged("block")
        saved_block = sum(n for n, tag in saved.values() if tag == "block")
        saved_all = sum(n for n, _ in saved.values())
        loss.backward()
    return StepActivations(inputs, end_block, end - blocks * end_block, live.peak - end, saved_block,
                           saved_all - blocks * saved_block, time.perf_counter() - started)


def _in_backward() -> bool:
    return torch._C._current_graph_task_id() != -1


def simulate_inference(cfg, spec, precision: Precision, tokens: Tokens) -> int:
    """Peak bytes (inputs and activations, not the weights) of a no-grad forward of the one-block transformer, in
    the module's dtype without autocast (the validation pipeline's way): activations do not pile up over blocks."""
    mode = fake_mode()
    weights = precision.gathered or None
    module = build_transformer(cfg, spec, frozen=weights or precision.frozen, trained=weights or precision.trained,
                               fp8=False)
    module = fake_parameters(module, mode).eval()
    with mode:
        kwargs = step_inputs(module, tokens, module.dtype)
    given = [t for t in kwargs.values() if isinstance(t, torch.Tensor)]
    live = LiveBytes([*module.parameters(), *module.buffers(), *given])
    with mode, live, torch.no_grad():
        module(**kwargs)
    return live.peak + _nbytes(given)


def simulate_vae(spec, dtype: torch.dtype, shape: tuple, *, decode: bool, tiled: bool) -> int:
    """Peak bytes (input and activations, not the weights) of the video VAE's decode (or encode) of one ``shape``
    tensor, tiled as ``memory.tiled_vae`` tiles it."""
    mode = fake_mode()
    vae = spec.build(meta=True).to(dtype)
    vae = fake_parameters(vae, mode).eval()
    if tiled:
        from ltx2train.memory.tiling import enable_vae_tiling

        enable_vae_tiling(vae)
    with mode:
        x = torch.randn(shape, dtype=dtype)
    live = LiveBytes([*vae.parameters(), *vae.buffers(), x])
    with mode, live, torch.no_grad():
        vae.decode(x) if decode else vae.encode(x)
    return live.peak + _nbytes([x])


# ---------------------------------------------------------------------------------------------- other components
def component_bytes(spec, dtype: torch.dtype, fp8: bool, component: str) -> int:
    """Parameter and buffer bytes of a (frozen) component in ``dtype``, FP8 as ``store_fp8`` stores it."""
    module = spec.build(meta=True).to(dtype)
    if fp8:
        from ltx2train.memory.fp8 import store_fp8

        store_fp8(module, component, compute_dtype=_compute_of(dtype))
    return module_bytes(module)


GEMMA3_12B = {  # google/gemma-3-12b-it (the LTX-2 text encoder), used when model.text_encoder is not on disk
    "text_config": dict(vocab_size=262208, hidden_size=3840, intermediate_size=15360, num_hidden_layers=48,
                        num_attention_heads=16, num_key_value_heads=8, head_dim=256),
    "vision_config": dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                          image_size=896, patch_size=14),
    "mm_tokens_per_image": 256,
}


# LTX-2.5's text encoder, LTX's fine-tuned Gemma 4 12B: 48 layers of width 3840 (MLP 15360), 5 sliding-window layers
# (256-wide heads, 8 KV heads) to each global one (512-wide heads, keys equal values, 1 KV head): the figures of its
# file's header as published third-party captures show it (tests/data/reference/README.md).
GEMMA4_12B_TEXT = dict(vocab_size=262144, hidden_size=3840, intermediate_size=15360, num_hidden_layers=48,
                       num_attention_heads=16, num_key_value_heads=8, head_dim=256, global_head_dim=512,
                       num_global_key_value_heads=1, attention_k_eq_v=True)


def gemma_config(cfg, spec):
    """The text encoder's config: ``model.text_encoder/config.json`` if it is there; otherwise the 12B Gemma of the
    variant's kind (Gemma 3 for LTX-2 and 2.3, Gemma 4 for 2.5) when its connectors take 49 x 3840 hidden states,
    or the tiny stand-in ``models/tiny.py`` writes."""
    from pathlib import Path

    from transformers import AutoConfig

    path = Path(cfg.model.text_encoder)
    if (path / "config.json").is_file():
        return AutoConfig.from_pretrained(path, local_files_only=True), str(path / "config.json")
    connectors = spec.component("connectors").config
    hidden, layers = connectors["caption_channels"], connectors["text_proj_in_factor"] - 1
    if (hidden, layers) == (3840, 48) and spec.text_encoder == "gemma4_unified":
        from transformers import Gemma4UnifiedConfig, Gemma4UnifiedTextConfig

        return Gemma4UnifiedConfig(text_config=Gemma4UnifiedTextConfig(**GEMMA4_12B_TEXT).to_dict()), \
            "Gemma 4 12B (built in)"
    if (hidden, layers) == (3840, 48):
        from transformers import Gemma3Config, Gemma3TextConfig, SiglipVisionConfig

        return Gemma3Config(text_config=Gemma3TextConfig(**GEMMA3_12B["text_config"]),
                            vision_config=SiglipVisionConfig(**GEMMA3_12B["vision_config"]),
                            mm_tokens_per_image=GEMMA3_12B["mm_tokens_per_image"]), "Gemma 3 12B (built in)"
    from ltx2train.models.tiny import build_tiny_gemma

    return build_tiny_gemma(hidden_size=hidden, num_layers=layers, kind=spec.text_encoder).config, \
        "the tiny Gemma stand-in"


def gemma_bytes(config, dtype: torch.dtype, fp8: bool) -> int:
    import transformers
    from accelerate import init_empty_weights

    from ltx2train.models.text_encoder import GEMMA_CLASSES

    cls = getattr(transformers, GEMMA_CLASSES[config.model_type])
    with init_empty_weights():
        model = cls(config)
    model.tie_weights()
    model.to(dtype)
    if fp8:
        from ltx2train.memory.fp8 import store_fp8

        store_fp8(model, "text_encoder", compute_dtype=_compute_of(dtype))
    return module_bytes(model)


def gemma_forward_bytes(config, tokens: int, dtype: torch.dtype) -> int:
    """``GemmaTextEncoder.encode`` of one prompt: every layer's hidden states (kept for ``output_hidden_states``)
    and their stacked copy, plus the language-model logits over the vocabulary."""
    text = getattr(config, "text_config", None) or config
    hidden = (text.num_hidden_layers + 1) * tokens * text.hidden_size * dtype.itemsize
    return 2 * hidden + tokens * text.vocab_size * dtype.itemsize


# ---------------------------------------------------------------------------------------------- the estimate
@dataclass
class _Totals:
    """The transformer's weights at full size (every block), from block 0 and the rest."""

    frozen: int
    trained: int
    trained_numels: list[int]
    frozen_shapes: list[tuple]
    trained_shapes: list[tuple]
    block_frozen: int
    block_trained: int

    @classmethod
    def of(cls, w: WeightCounts, layers: int) -> "_Totals":
        return cls(w.outside_frozen + layers * w.block_frozen, w.outside_trained + layers * w.block_trained,
                   w.outside_trained_numels + layers * w.block_trained_numels,
                   w.outside_frozen_shapes + layers * w.block_frozen_shapes,
                   w.outside_trained_shapes + layers * w.block_trained_shapes, w.block_frozen, w.block_trained)


def _world_size(world_size: int | None) -> int:
    world = world_size if world_size is not None else int(os.environ.get("WORLD_SIZE", "1"))
    if world < 1:
        raise ValueError(f"world size must be >= 1, got {world}")
    return world


def _weight_parts(cfg, w: WeightCounts, layers: int, world: int, precision: Precision, parts: dict, host: dict,
                  notes: list) -> None:
    """Weights, gradients, optimizer state and the backend's own buffers, per GPU."""
    t, backend, name = _Totals.of(w, layers), cfg.distributed.backend, cfg.optimizer.name
    if backend == "fsdp2":
        _fsdp2_parts(cfg, t, w, layers, world, precision, parts, host)
        return
    if backend == "deepspeed":
        _deepspeed_parts(cfg, t, w, world, precision, parts, host)
        return
    numels = sum(t.trained_numels)
    parts["transformer_frozen"], parts["transformer_trained"] = t.frozen, t.trained
    parts["gradients"] = numels * precision.trained.itemsize
    parts["optimizer_state"] = optimizer_state_bytes(t.trained_numels, name)
    parts["ddp_buckets"] = parts["gradients"] if world > 1 else 0  # DDP's gradient buckets (not bucket views)
    parts["optimizer_step_temp"] = 0 if name == "adamw8bit" else 4 * numels  # foreach AdamW: a sqrt(v) copy
    _block_swap(cfg, w, layers, name, precision, parts, host, notes)


def _fsdp2_parts(cfg, t: _Totals, w: WeightCounts, layers: int, world: int, precision: Precision, parts: dict,
                 host: dict) -> None:
    """Every parameter in dim-0 shards (gradients and optimizer state with them); gathered in the compute dtype
    a block at a time (the running one and the prefetched next), the root's for the whole step."""
    d, name = cfg.distributed, cfg.optimizer.name
    shard_numels = [math.ceil((s[0] if s else 1) / world) * math.prod(s[1:]) for s, _ in t.trained_shapes]
    _place(parts, host, {"transformer_frozen": _shard(t.frozen_shapes, world),
                         "transformer_trained": _shard(t.trained_shapes, world),
                         "gradients": sum(shard_numels) * precision.trained.itemsize,
                         "optimizer_state": optimizer_state_bytes(shard_numels, name)}, d.cpu_offload)

    def gathered(shapes: list[tuple]) -> int:
        return sum(math.prod(s) * (precision.gathered.itemsize if precision.gathered else size) for s, size in shapes)

    blocks = 2 if d.reshard_after_forward else layers  # reshard_after_forward=false keeps every block gathered
    parts["fsdp_unsharded"] = (gathered(w.outside_frozen_shapes + w.outside_trained_shapes)
                               + blocks * gathered(w.block_frozen_shapes + w.block_trained_shapes)
                               + 4 * sum(w.block_trained_numels))  # a block's float32 gradients before reduce-scatter
    on_host = d.cpu_offload or name == "adamw8bit"  # offloaded: the step runs on the host
    parts["optimizer_step_temp"] = 0 if on_host else 4 * sum(shard_numels)


def _place(parts: dict, host: dict, sizes: dict, offloaded: bool) -> None:
    for key, value in sizes.items():
        (host if offloaded else parts)[key] = value
        if offloaded:
            parts[key] = 0


def _deepspeed_parts(cfg, t: _Totals, w: WeightCounts, world: int, precision: Precision, parts: dict,
                     host: dict) -> None:
    """ZeRO-2: the module whole on every GPU, float32 master weights, gradients and optimizer state partitioned;
    ZeRO-3: the module partitioned too, gathered a block or two at a time."""
    d, name = cfg.distributed, cfg.optimizer.name
    partition = math.ceil(sum(t.trained_numels) / world)
    if d.zero_stage >= 3:
        _place(parts, host, {"transformer_frozen": math.ceil(t.frozen / world),
                             "transformer_trained": math.ceil(t.trained / world)}, d.offload_params)
        parts["zero3_gathered"] = w.outside_frozen + w.outside_trained + 2 * (w.block_frozen + w.block_trained)
    else:
        parts["transformer_frozen"], parts["transformer_trained"] = t.frozen, t.trained
    master = 4 * partition if precision.master else 0  # without bf16/fp16 the optimizer steps the module's float32
    _place(parts, host, {"master_weights": master, "gradients": 4 * partition,
                         "optimizer_state": optimizer_state_bytes([partition], name)}, d.offload_optimizer)
    parts["zero_buckets"] = ZERO_REDUCE_BUCKET * precision.trained.itemsize
    parts["optimizer_step_temp"] = 0 if d.offload_optimizer or name == "adamw8bit" else 4 * partition


def _block_swap(cfg, w: WeightCounts, layers: int, name: str, precision: Precision, parts: dict, host: dict,
                notes: list) -> None:
    """``memory.block_swap``: the last N blocks' frozen weights on the host, a few block copies on the device.
    Under full fine-tuning their float32 master weights too, with their gradients and optimizer state (the
    optimizer steps them there), and DDP's buckets no longer hold their gradients."""
    n = min(cfg.memory.block_swap, layers)
    if not n:
        return
    full = cfg.train.method == "full"
    block = w.block_frozen + (w.block_trained if full else 0)
    host["block_swap_weights"] = n * block
    parts["transformer_frozen"] -= n * w.block_frozen
    kept = min(n, 3) if cfg.train.gradient_checkpointing else n
    parts["block_swap_buffers"] = kept * block
    if full:
        parts["transformer_trained"] -= n * w.block_trained
        numels = n * sum(w.block_trained_numels)
        host["block_swap_gradients"] = numels * precision.trained.itemsize
        host["block_swap_optimizer_state"] = optimizer_state_bytes(n * w.block_trained_numels, name)
        parts["gradients"] -= host["block_swap_gradients"]
        parts["optimizer_state"] -= host["block_swap_optimizer_state"]
        if parts["ddp_buckets"]:
            parts["ddp_buckets"] = parts["gradients"]
        if parts["optimizer_step_temp"]:
            parts["optimizer_step_temp"] -= 4 * numels
    if not cfg.train.gradient_checkpointing:
        notes.append("memory.block_swap without train.gradient_checkpointing: autograd keeps every swapped block's "
                     "device copy until backward, so the step's peak is not lower (between steps it is)")


def _activation_parts(cfg, sim: StepActivations, w: WeightCounts, layers: int, parts: dict, host: dict,
                      notes: list) -> None:
    parts["step_inputs"] = sim.inputs
    parts["activations"] = sim.at_end_of_forward(layers)
    parts["activation_transient"] = sim.transient
    if cfg.memory.activation_offload:
        moved = sim.saved(layers)
        host["activations_offloaded"] = moved
        parts["activations"] = max(0, parts["activations"] - moved) + sim.saved_block  # one block's brought back
    if "transformer" in cfg.memory.fp8_frozen and cfg.train.method == "lora":
        blocks = 1 if cfg.train.gradient_checkpointing else layers
        parts["fp8_compute_copies"] = blocks * w.block_fp8_cast
        if not cfg.train.gradient_checkpointing:
            notes.append("memory.fp8_frozen=[transformer] without gradient checkpointing: autograd keeps each FP8 "
                         "layer's compute-dtype copy until backward (fp8_compute_copies), so the step's peak is not "
                         "lower than without FP8")


def _other_weights(cfg, spec, precision: Precision, parts: dict, notes: list) -> None:
    from ltx2train.models.specs import torch_dtype

    fp8, dtype = set(cfg.memory.fp8_frozen), torch_dtype(cfg.model.dtype)
    parts["connectors"] = component_bytes(spec.component("connectors"), dtype, "connectors" in fp8, "connectors")
    parts["validation_decoders"] = 0
    if cfg.validation.prompts:
        parts["validation_decoders"] = (
            component_bytes(spec.component("video_vae"), dtype, "video_vae" in fp8, "video_vae")
            + component_bytes(spec.component("audio_vae"), dtype, "audio_vae" in fp8, "audio_vae")
            + component_bytes(spec.component("vocoder"), torch.float32, False, "vocoder"))
        notes.append("validation_decoders (video VAE, audio VAE, vocoder) stay on the main process's GPU for the "
                     "whole run: the peak is the main process's")
        if cfg.validation.video_decoder == "diffusion":
            parts["validation_decoders"] += component_bytes(spec.component("video_diffusion_decoder"), dtype, False,
                                                            "video_diffusion_decoder")
            notes.append("validation.video_decoder=diffusion: its weights are in validation_decoders; its decode "
                         "(compiled FlexAttention on a GPU) is not simulated: benchmarks/video_decode.py measures it")


def _validation_parts(cfg, spec, precision: Precision, parts: dict) -> None:
    from ltx2train.models.specs import torch_dtype

    parts["validation_forward"] = parts["validation_decode"] = 0
    v = cfg.validation
    if not v.prompts:
        return
    transformer = spec.component("transformer")
    guided = v.guidance_scale > 1.0 or v.audio_guidance_scale > 1.0  # CFG: conditional + unconditional batch
    tokens = tokens_for(v.height, v.width, v.num_frames, v.fps, cfg.data.max_sequence_length, 2 if guided else 1,
                        transformer.config)
    parts["validation_forward"] = simulate_inference(cfg, transformer, precision, tokens)
    vae = spec.component("video_vae")
    latent = (1, vae.config["latent_channels"], tokens.frames, tokens.height, tokens.width)
    parts["validation_decode"] = simulate_vae(vae, torch_dtype(cfg.model.dtype), latent, decode=True,
                                              tiled=cfg.memory.tiled_vae)


def _prepare_parts(cfg, spec, bucket: str, notes: list) -> dict:
    """``ltx2train prepare`` (its own processes): Gemma + the text projection, then the VAEs encoding clips."""
    from ltx2train.data.buckets import Bucket
    from ltx2train.models.specs import torch_dtype

    dtype, fp8 = torch_dtype(cfg.model.dtype), set(cfg.memory.fp8_frozen)
    config, source = gemma_config(cfg, spec)
    notes.append(f"prepare: the text encoder from {source}")
    b = Bucket.parse(bucket)
    vae = spec.component("video_vae")
    return {
        "prepare_text_encoder": gemma_bytes(config, dtype, "text_encoder" in fp8)
        + component_bytes(spec.component("connectors"), dtype, "connectors" in fp8, "connectors"),
        "prepare_text_forward": gemma_forward_bytes(config, cfg.data.max_sequence_length, dtype),
        "prepare_vae": component_bytes(vae, dtype, "video_vae" in fp8, "video_vae")
        + component_bytes(spec.component("audio_vae"), torch.float32, "audio_vae" in fp8, "audio_vae"),
        "prepare_encode": simulate_vae(vae, dtype, (1, 3, b.frames, b.height, b.width), decode=False,
                                       tiled=cfg.memory.tiled_vae),
    }


def _phases(cfg, parts: dict, w: WeightCounts, layers: int) -> dict:
    """What is live together at each moment that can be the peak."""
    persistent = sum(parts.get(k, 0) for k in (
        "transformer_frozen", "transformer_trained", "master_weights", "optimizer_state", "connectors",
        "validation_decoders", "ddp_buckets", "zero_buckets", "block_swap_buffers", "zero3_gathered"))
    gathered = parts.get("fsdp_unsharded", 0)
    # Gradients during backward: all of them when accumulating over micro-batches, else those written before the
    # peak (the blocks run last in backward come first): at most one block's and the parameters outside them.
    trained = w.outside_trained + layers * w.block_trained
    share = 1.0 if cfg.train.gradient_accumulation_steps > 1 else (w.block_trained + w.outside_trained) / max(1, trained)
    live_grads = int(parts["gradients"] * min(1.0, share))
    phases = {
        "forward_backward": persistent + gathered + parts["step_inputs"] + parts["activations"]
        + parts["activation_transient"] + parts.get("fp8_compute_copies", 0) + live_grads,
        "backward_end": persistent + gathered + parts["step_inputs"] + parts["activation_transient"]
        + parts["gradients"],
        "optimizer_step": persistent + parts["gradients"] + parts["optimizer_step_temp"],
    }
    if cfg.validation.prompts:
        phases["validation"] = persistent + gathered + max(parts["validation_forward"], parts["validation_decode"])
    return phases


def estimate_memory(cfg, world_size: int | None = None, *, prepare: bool = True) -> MemoryEstimate:
    """The per-GPU memory of training ``cfg`` on ``world_size`` processes (default: ``WORLD_SIZE`` or 1), from
    the variant spec alone: no weights, no data. See the module docstring for the model of each part."""
    from ltx2train.models.specs import load_variant

    with _quiet_diffusers():
        return _estimate(cfg, _world_size(world_size), load_variant(cfg.model.variant), prepare)


@contextlib.contextmanager
def _quiet_diffusers():
    """diffusers warns on every ``module.to(dtype)`` of a model without fp32 modules; nothing to act on here."""
    from diffusers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(level)


def _estimate(cfg, world: int, spec, prepare: bool) -> MemoryEstimate:
    transformer = spec.component("transformer")
    layers, precision, notes = transformer.config["num_layers"], precision_of(cfg), []
    bucket, tokens = largest_bucket(cfg, transformer.config)
    fp8 = "transformer" in cfg.memory.fp8_frozen and cfg.train.method == "lora"
    weights = count_weights(build_transformer(cfg, transformer, frozen=precision.frozen, trained=precision.trained,
                                              fp8=fp8))
    parts, host = {}, {}
    _weight_parts(cfg, weights, layers, world, precision, parts, host, notes)
    _other_weights(cfg, spec, precision, parts, notes)
    sim = simulate_step(cfg, transformer, precision, tokens)
    _activation_parts(cfg, sim, weights, layers, parts, host, notes)
    _validation_parts(cfg, spec, precision, parts)
    phases = _phases(cfg, parts, weights, layers)
    total = max(phases.values())
    if prepare:
        prep = _prepare_parts(cfg, spec, bucket, notes)
        parts.update(prep)
        phases["prepare_text"] = prep["prepare_text_encoder"] + prep["prepare_text_forward"]
        phases["prepare_media"] = prep["prepare_vae"] + prep["prepare_encode"]
    info = {"bucket": bucket, **tokens.describe(), "layers": layers,
            "activations_per_block": sim.block, "activations_outside_blocks": sim.outside,
            "bytes_per_video_token_per_block": sim.block / max(1, tokens.batch * tokens.video),
            "simulation_seconds": round(sim.seconds, 2)}
    notes.append("activations: simulated step (PyTorch CPU kernels, fake tensors); CUDA allocator rounding, "
                 "cuBLAS/cuDNN workspaces and fragmentation are not counted")
    order = {k: i for i, k in enumerate(PART_LABELS)}
    parts = dict(sorted(parts.items(), key=lambda kv: order.get(kv[0], len(order))))
    return MemoryEstimate(int(total), {k: int(v) for k, v in parts.items()}, {k: int(v) for k, v in phases.items()},
                          {k: int(v) for k, v in host.items()}, info, world, notes)


# ---------------------------------------------------------------------------------------------- the table
PART_LABELS = {
    "transformer_frozen": "transformer, frozen weights",
    "transformer_trained": "transformer, trained weights",
    "master_weights": "float32 master weights (ZeRO)",
    "gradients": "gradients",
    "optimizer_state": "optimizer state",
    "connectors": "text connectors",
    "validation_decoders": "validation VAEs + vocoder (main process)",
    "ddp_buckets": "DDP gradient buckets",
    "zero_buckets": "ZeRO reduce bucket",
    "zero3_gathered": "ZeRO-3 gathered parameters",
    "fsdp_unsharded": "FSDP2 gathered blocks + root",
    "block_swap_buffers": "block swap device copies",
    "step_inputs": "step inputs and targets",
    "activations": "activations kept for backward",
    "activation_transient": "backward working set / recompute",
    "fp8_compute_copies": "FP8 layers' compute-dtype copies",
    "optimizer_step_temp": "optimizer step temporaries",
    "validation_forward": "validation denoising forward",
    "validation_decode": "validation video decode",
    "prepare_text_encoder": "prepare: Gemma + text projection",
    "prepare_text_forward": "prepare: Gemma hidden states + logits",
    "prepare_vae": "prepare: video + audio VAE",
    "prepare_encode": "prepare: video encode",
}
PHASE_LABELS = {
    "forward_backward": "forward + backward", "backward_end": "end of backward", "optimizer_step": "optimizer step",
    "validation": "validation", "prepare_text": "prepare, text phase", "prepare_media": "prepare, media phase",
}


def format_bytes(n: float) -> str:
    if abs(n) >= GIB:
        return f"{n / GIB:8.2f} GiB"
    return f"{n / MIB:8.1f} MiB" if abs(n) >= MIB else f"{n / 1024:8.1f} KiB"


def format_estimate(est: MemoryEstimate, cfg, recipe: str = "") -> str:
    """A readable table: the peak, the parts on the device, the phases, what lives on the host, the notes."""
    t, d = est.tokens, cfg.distributed
    backend = d.backend + (f" ZeRO-{d.zero_stage}" if d.backend == "deepspeed" else "")
    training = {k: v for k, v in est.phases.items() if not k.startswith("prepare")}
    where = max(training, key=training.get)
    lines = [
        f"memory per GPU for {recipe or 'the recipe'}: {cfg.model.variant}, {cfg.train.method}, {backend} x "
        f"{est.world_size}, mixed precision {cfg.train.mixed_precision}, gradient checkpointing "
        f"{'on' if cfg.train.gradient_checkpointing else 'off'}, {cfg.optimizer.name}",
        f"largest bucket {t['bucket']} x batch {t['batch']}: {t['video']} video + {t['audio']} audio + {t['text']} "
        f"text tokens per clip",
        f"peak: {format_bytes(est.total_bytes).strip()} ({PHASE_LABELS[where]})",
        "",
        f"  {'part (device)':<44}{'bytes':>12}",
    ]
    lines += [f"  {PART_LABELS.get(k, k):<44}{format_bytes(v):>12}" for k, v in est.parts.items() if v]
    lines += ["", f"  {'phase (what is live together)':<44}{'bytes':>12}"]
    lines += [f"  {PHASE_LABELS.get(k, k):<44}{format_bytes(v):>12}" for k, v in est.phases.items()]
    if est.host:
        lines += ["", f"  {'host memory (offload, block swap)':<44}{'bytes':>12}"]
        lines += [f"  {k.replace('_', ' '):<44}{format_bytes(v):>12}" for k, v in est.host.items()]
    per_token = t["bytes_per_video_token_per_block"] / 1024
    lines += ["", f"activations: {format_bytes(t['activations_per_block']).strip()} per block x {t['layers']} blocks "
              f"({per_token:.1f} KiB per video token per block, audio and text included) + "
              f"{format_bytes(t['activations_outside_blocks']).strip()} outside the blocks at the end of the forward"]
    lines += [f"note: {n}" for n in est.notes]
    return "\n".join(lines)
