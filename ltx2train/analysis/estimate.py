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

Over 400 lines: one cost model. Weights, sharding, offload, block swap and the phases are each a few functions, but
they add into one table per phase; the simulation, the fake-tensor builds and the report are their own modules.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import torch

from ltx2train.config import Config
from ltx2train.analysis.fake import build_transformer, quiet_diffusers
from ltx2train.analysis.precision import Precision, precision_of
from ltx2train.analysis.simulate import StepActivations, simulate_inference, simulate_step, simulate_vae
from ltx2train.analysis.tokens import largest_bucket, tokens_for
from ltx2train.analysis.weights import (
    WeightCounts,
    component_bytes,
    count_weights,
    gemma_bytes,
    gemma_config,
    gemma_forward_bytes,
)
from ltx2train.utils.errors import UserError

ADAMW8BIT_MIN_SIZE, ADAMW8BIT_BLOCK = 4096, 256  # bitsandbytes' min_8bit_size and blockwise quantisation block
ZERO_REDUCE_BUCKET = 500_000_000  # DeepSpeed's default reduce_bucket_size (elements)


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
        return {
            "total_bytes": self.total_bytes,
            "parts": self.parts,
            "phases": self.phases,
            "host": self.host,
            "tokens": self.tokens,
            "world_size": self.world_size,
            "notes": self.notes,
        }


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
        return (
            sum(
                2 * n + 2 * 4 * math.ceil(n / ADAMW8BIT_BLOCK) if n >= ADAMW8BIT_MIN_SIZE else 2 * n * 4 for n in numels
            )
            + 2 * 256 * 4
        )  # the two shared quantisation maps
    raise UserError(f"optimizer.name: unknown optimizer {name!r}; expected adamw or adamw8bit")


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
        return cls(
            w.outside_frozen + layers * w.block_frozen,
            w.outside_trained + layers * w.block_trained,
            w.outside_trained_numels + layers * w.block_trained_numels,
            w.outside_frozen_shapes + layers * w.block_frozen_shapes,
            w.outside_trained_shapes + layers * w.block_trained_shapes,
            w.block_frozen,
            w.block_trained,
        )


def _world_size(world_size: int | None) -> int:
    world = world_size if world_size is not None else int(os.environ.get("WORLD_SIZE", "1"))
    if world < 1:
        raise UserError(f"world size must be >= 1, got {world}")
    return world


def _weight_parts(
    cfg: Config, w: WeightCounts, layers: int, world: int, precision: Precision, parts: dict, host: dict, notes: list
) -> None:
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


def _fsdp2_parts(
    cfg: Config, t: _Totals, w: WeightCounts, layers: int, world: int, precision: Precision, parts: dict, host: dict
) -> None:
    """Every parameter in dim-0 shards (gradients and optimizer state with them); gathered in the compute dtype
    a block at a time (the running one and the prefetched next), the root's for the whole step."""
    d, name = cfg.distributed, cfg.optimizer.name
    shard_numels = [math.ceil((s[0] if s else 1) / world) * math.prod(s[1:]) for s, _ in t.trained_shapes]
    _place(
        parts,
        host,
        {
            "transformer_frozen": _shard(t.frozen_shapes, world),
            "transformer_trained": _shard(t.trained_shapes, world),
            "gradients": sum(shard_numels) * precision.trained.itemsize,
            "optimizer_state": optimizer_state_bytes(shard_numels, name),
        },
        d.cpu_offload,
    )

    def gathered(shapes: list[tuple]) -> int:
        return sum(math.prod(s) * (precision.gathered.itemsize if precision.gathered else size) for s, size in shapes)

    blocks = 2 if d.reshard_after_forward else layers  # reshard_after_forward=false keeps every block gathered
    parts["fsdp_unsharded"] = (
        gathered(w.outside_frozen_shapes + w.outside_trained_shapes)
        + blocks * gathered(w.block_frozen_shapes + w.block_trained_shapes)
        + 4 * sum(w.block_trained_numels)
    )  # a block's float32 gradients before reduce-scatter
    on_host = d.cpu_offload or name == "adamw8bit"  # offloaded: the step runs on the host
    parts["optimizer_step_temp"] = 0 if on_host else 4 * sum(shard_numels)


def _place(parts: dict, host: dict, sizes: dict, offloaded: bool) -> None:
    for key, value in sizes.items():
        (host if offloaded else parts)[key] = value
        if offloaded:
            parts[key] = 0


def _deepspeed_parts(
    cfg: Config, t: _Totals, w: WeightCounts, world: int, precision: Precision, parts: dict, host: dict
) -> None:
    """ZeRO-2: the module whole on every GPU, float32 master weights, gradients and optimizer state partitioned;
    ZeRO-3: the module partitioned too, gathered a block or two at a time."""
    d, name = cfg.distributed, cfg.optimizer.name
    partition = math.ceil(sum(t.trained_numels) / world)
    if d.zero_stage >= 3:
        _place(
            parts,
            host,
            {"transformer_frozen": math.ceil(t.frozen / world), "transformer_trained": math.ceil(t.trained / world)},
            d.offload_params,
        )
        parts["zero3_gathered"] = w.outside_frozen + w.outside_trained + 2 * (w.block_frozen + w.block_trained)
    else:
        parts["transformer_frozen"], parts["transformer_trained"] = t.frozen, t.trained
    master = 4 * partition if precision.master else 0  # without bf16/fp16 the optimizer steps the module's float32
    _place(
        parts,
        host,
        {
            "master_weights": master,
            "gradients": 4 * partition,
            "optimizer_state": optimizer_state_bytes([partition], name),
        },
        d.offload_optimizer,
    )
    parts["zero_buckets"] = ZERO_REDUCE_BUCKET * precision.trained.itemsize
    parts["optimizer_step_temp"] = 0 if d.offload_optimizer or name == "adamw8bit" else 4 * partition


def _block_swap(
    cfg: Config, w: WeightCounts, layers: int, name: str, precision: Precision, parts: dict, host: dict, notes: list
) -> None:
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
        notes.append(
            "memory.block_swap without train.gradient_checkpointing: autograd keeps every swapped block's "
            "device copy until backward, so the step's peak is not lower (between steps it is)"
        )


def _activation_parts(
    cfg: Config, sim: StepActivations, w: WeightCounts, layers: int, parts: dict, host: dict, notes: list
) -> None:
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
            notes.append(
                "memory.fp8_frozen=[transformer] without gradient checkpointing: autograd keeps each FP8 "
                "layer's compute-dtype copy until backward (fp8_compute_copies), so the step's peak is not "
                "lower than without FP8"
            )


def _other_weights(cfg: Config, spec, precision: Precision, parts: dict, notes: list) -> None:
    from ltx2train.models.specs import torch_dtype

    fp8, dtype = set(cfg.memory.fp8_frozen), torch_dtype(cfg.model.dtype)
    parts["connectors"] = component_bytes(spec.component("connectors"), dtype, "connectors" in fp8, "connectors")
    parts["validation_decoders"] = 0
    if cfg.validation.prompts:
        parts["validation_decoders"] = (
            component_bytes(spec.component("video_vae"), dtype, "video_vae" in fp8, "video_vae")
            + component_bytes(spec.component("audio_vae"), dtype, "audio_vae" in fp8, "audio_vae")
            + component_bytes(spec.component("vocoder"), torch.float32, False, "vocoder")
        )
        notes.append(
            "validation_decoders (video VAE, audio VAE, vocoder) stay on the main process's GPU for the "
            "whole run: the peak is the main process's"
        )
        if cfg.validation.video_decoder == "diffusion":
            parts["validation_decoders"] += component_bytes(
                spec.component("video_diffusion_decoder"), dtype, False, "video_diffusion_decoder"
            )
            notes.append(
                "validation.video_decoder=diffusion: its weights are in validation_decoders; its decode "
                "(compiled FlexAttention on a GPU) is not simulated: benchmarks/video_decode.py measures it"
            )


def _validation_parts(cfg: Config, spec, precision: Precision, parts: dict) -> None:
    from ltx2train.models.specs import torch_dtype

    parts["validation_forward"] = parts["validation_decode"] = 0
    v = cfg.validation
    if not v.prompts:
        return
    transformer = spec.component("transformer")
    guided = v.guidance_scale > 1.0 or v.audio_guidance_scale > 1.0  # CFG: conditional + unconditional batch
    tokens = tokens_for(
        v.height, v.width, v.num_frames, v.fps, cfg.data.max_sequence_length, 2 if guided else 1, transformer.config
    )
    parts["validation_forward"] = simulate_inference(cfg, transformer, precision, tokens)
    vae = spec.component("video_vae")
    latent = (1, vae.config["latent_channels"], tokens.frames, tokens.height, tokens.width)
    parts["validation_decode"] = simulate_vae(
        vae, torch_dtype(cfg.model.dtype), latent, decode=True, tiled=cfg.memory.tiled_vae
    )


def _prepare_parts(cfg: Config, spec, bucket: str, notes: list) -> dict:
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
        "prepare_encode": simulate_vae(
            vae, dtype, (1, 3, b.frames, b.height, b.width), decode=False, tiled=cfg.memory.tiled_vae
        ),
    }


def _phases(cfg: Config, parts: dict, w: WeightCounts, layers: int) -> dict:
    """What is live together at each moment that can be the peak."""
    persistent = sum(
        parts.get(k, 0)
        for k in (
            "transformer_frozen",
            "transformer_trained",
            "master_weights",
            "optimizer_state",
            "connectors",
            "validation_decoders",
            "ddp_buckets",
            "zero_buckets",
            "block_swap_buffers",
            "zero3_gathered",
        )
    )
    gathered = parts.get("fsdp_unsharded", 0)
    # Gradients during backward: all of them when accumulating over micro-batches, else those written before the
    # peak (the blocks run last in backward come first): at most one block's and the parameters outside them.
    trained = w.outside_trained + layers * w.block_trained
    share = (
        1.0 if cfg.train.gradient_accumulation_steps > 1 else (w.block_trained + w.outside_trained) / max(1, trained)
    )
    live_grads = int(parts["gradients"] * min(1.0, share))
    phases = {
        "forward_backward": persistent
        + gathered
        + parts["step_inputs"]
        + parts["activations"]
        + parts["activation_transient"]
        + parts.get("fp8_compute_copies", 0)
        + live_grads,
        "backward_end": persistent
        + gathered
        + parts["step_inputs"]
        + parts["activation_transient"]
        + parts["gradients"],
        "optimizer_step": persistent + parts["gradients"] + parts["optimizer_step_temp"],
    }
    if cfg.validation.prompts:
        phases["validation"] = persistent + gathered + max(parts["validation_forward"], parts["validation_decode"])
    return phases


def estimate_memory(cfg: Config, world_size: int | None = None, *, prepare: bool = True) -> MemoryEstimate:
    """The per-GPU memory of training ``cfg`` on ``world_size`` processes (default: ``WORLD_SIZE`` or 1), from
    the variant spec alone: no weights, no data. See the module docstring for the model of each part."""
    from ltx2train.models.specs import load_variant

    with quiet_diffusers():
        return _estimate(cfg, _world_size(world_size), load_variant(cfg.model.variant), prepare)


def _estimate(cfg: Config, world: int, spec, prepare: bool) -> MemoryEstimate:
    transformer = spec.component("transformer")
    layers, precision, notes = transformer.config["num_layers"], precision_of(cfg), []
    bucket, tokens = largest_bucket(cfg, transformer.config)
    fp8 = "transformer" in cfg.memory.fp8_frozen and cfg.train.method == "lora"
    weights = count_weights(
        build_transformer(cfg, transformer, frozen=precision.frozen, trained=precision.trained, fp8=fp8)
    )
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
    info = {
        "bucket": bucket,
        **tokens.describe(),
        "layers": layers,
        "activations_per_block": sim.block,
        "activations_outside_blocks": sim.outside,
        "bytes_per_video_token_per_block": sim.block / max(1, tokens.batch * tokens.video),
        "simulation_seconds": round(sim.seconds, 2),
    }
    notes.append(
        "activations: simulated step (PyTorch CPU kernels, fake tensors); CUDA allocator rounding, "
        "cuBLAS/cuDNN workspaces and fragmentation are not counted"
    )
    order = {k: i for i, k in enumerate(PART_LABELS)}
    parts = dict(sorted(parts.items(), key=lambda kv: order.get(kv[0], len(order))))
    return MemoryEstimate(
        int(total),
        {k: int(v) for k, v in parts.items()},
        {k: int(v) for k, v in phases.items()},
        {k: int(v) for k, v in host.items()},
        info,
        world,
        notes,
    )


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
