"""Memory estimate (``ltx2train inspect memory``) vs a measured training step, side by side. Not a test.

    python benchmarks/memory.py                 # tiny (4 blocks), mid-size (LTX-2 19B widths, 2 and 4 blocks)
    python benchmarks/memory.py --cases tiny-lora tiny-lora-ckpt

Each case is a recipe (recipes/demo.yaml + overrides) on a variant JSON with fewer blocks. The estimate comes from
the variant spec alone (meta device, a simulated one-block step). The measurement builds the real model with random
weights, applies the real method (``training/methods``), and runs two training steps on CPU the trainer's way
(inputs in the model's dtype, CPU autocast, masked-MSE-like loss, backward, clip, AdamW, ``zero_grad``); the second
step is measured (the optimizer state exists by then) with torch's ``MemTracker`` (torch.distributed._tools): a
dispatch mode holding a weak reference to every tensor storage, adding its exact size when it is created and
subtracting it when it is freed. Its peak is the peak of live tensor bytes -- no allocator slack, no interpreter or
library memory -- broken down into parameters, gradients, optimizer state and activations, and it shares no code
with the estimator. AdamW runs with ``foreach=True`` (CUDA's default, which the estimate assumes; on CPU torch
would loop tensor by tensor).

Ratios are estimate / measured per part: weights, gradients and optimizer state should be 1.000 exactly;
activations (the live non-weight bytes at the peak of forward + backward) and the total peak of the step within 15%.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

# name: (variant, blocks, overrides)
CASES = {
    "tiny-lora": (
        "tiny",
        4,
        [
            "data.height=256",
            "data.width=256",
            "data.num_frames=33",
            "train.method=lora",
            "train.gradient_checkpointing=false",
        ],
    ),
    "tiny-lora-ckpt": (
        "tiny",
        4,
        [
            "data.height=256",
            "data.width=256",
            "data.num_frames=33",
            "train.method=lora",
            "train.gradient_checkpointing=true",
        ],
    ),
    "tiny-full": (
        "tiny",
        4,
        [
            "data.height=256",
            "data.width=256",
            "data.num_frames=33",
            "train.method=full",
            "train.gradient_checkpointing=false",
        ],
    ),
    "tiny-full-ckpt": (
        "tiny",
        4,
        [
            "data.height=256",
            "data.width=256",
            "data.num_frames=33",
            "train.method=full",
            "train.gradient_checkpointing=true",
        ],
    ),
    "mid-lora": (
        "ltx2-19b",
        2,
        [
            "data.height=256",
            "data.width=384",
            "data.num_frames=25",
            "train.method=lora",
            "train.gradient_checkpointing=false",
            "model.dtype=bfloat16",
            "lora.rank=32",
        ],
    ),
    "mid-lora-ckpt": (
        "ltx2-19b",
        2,
        [
            "data.height=256",
            "data.width=384",
            "data.num_frames=25",
            "train.method=lora",
            "train.gradient_checkpointing=true",
            "model.dtype=bfloat16",
            "lora.rank=32",
        ],
    ),
    "mid4-lora-ckpt": (
        "ltx2-19b",
        4,
        [
            "data.height=256",
            "data.width=384",
            "data.num_frames=25",
            "train.method=lora",
            "train.gradient_checkpointing=true",
            "model.dtype=bfloat16",
            "lora.rank=32",
        ],
    ),
}
DEFAULT = ("tiny-lora", "tiny-lora-ckpt", "tiny-full", "tiny-full-ckpt", "mid-lora", "mid-lora-ckpt", "mid4-lora-ckpt")
COMMON = [
    "train.mixed_precision=bf16",
    "data.batch_size=1",
    "data.max_sequence_length=64",
    "validation.prompts=[]",
    "optimizer.name=adamw",
]


def variant_file(directory: Path, variant: str, blocks: int) -> Path:
    from ltx2train.models.specs import load_variant

    spec = load_variant(variant)
    data = {
        "name": f"{variant}-{blocks}blocks",
        "family": spec.family,
        "description": "benchmark",
        "components": {name: {"class": c.class_name, "config": dict(c.config)} for name, c in spec.components.items()},
    }
    data["components"]["transformer"]["config"]["num_layers"] = blocks
    path = directory / f"{variant}-{blocks}.json"
    path.write_text(json.dumps(data))
    return path


def recipe(directory: Path, variant: str, blocks: int, overrides: list[str]):
    from ltx2train.config import load_config

    path = variant_file(directory, variant, blocks)
    return load_config(REPO / "recipes" / "demo.yaml", [f"model.variant={path}", *COMMON, *overrides])


# ---------------------------------------------------------------------------------------------- estimate
def estimate(cfg) -> dict:
    from ltx2train.analysis.estimate import estimate_memory

    est = estimate_memory(cfg, world_size=1, prepare=False)
    p = est.parts
    step_phases = [est.phases[k] for k in ("forward_backward", "backward_end", "optimizer_step")]
    return {
        "weights": p["transformer_frozen"] + p["transformer_trained"],
        "gradients": p["gradients"],
        "optimizer_state": p["optimizer_state"],
        "activations": p["step_inputs"] + p["activations"] + p["activation_transient"],
        "step_peak": max(step_phases) - p["connectors"],
        "tokens": est.tokens,
    }


# ---------------------------------------------------------------------------------------------- measurement
def build_real(cfg):
    """The transformer as ``training/builder.py`` has it before the backend: ``model.dtype``, the method applied."""
    from ltx2train.models.specs import load_variant, torch_dtype
    from ltx2train.training.methods import build_method

    spec = load_variant(cfg.model.variant)
    torch.manual_seed(0)
    model = spec.component("transformer").build().to(torch_dtype(cfg.model.dtype))
    build_method(cfg, spec).apply(model, lambda _: None, fresh=True)
    if cfg.train.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    return model.train()


def step_inputs(model, tokens: dict) -> tuple[dict, list]:
    """Random transformer inputs and velocity targets for an estimate's ``tokens`` (the estimator's own builder)."""
    from ltx2train.analysis.fake import step_inputs, step_targets
    from ltx2train.analysis.tokens import Tokens

    tokens = Tokens.described(tokens)
    return step_inputs(model, tokens, model.dtype), step_targets(model, tokens)


def train_step(model, optimizer, kwargs, targets, params, measure_backward=None):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        video, audio = model(**kwargs)
        loss = ((video.float() - targets[0]) ** 2).mean() + ((audio.float() - targets[1]) ** 2).mean()
    loss.backward()
    if measure_backward is not None:
        measure_backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def memory_tracker():
    """torch's ``MemTracker``, except that it hooks gradients of trained parameters only (upstream registers a hook
    on every parameter, which raises on a LoRA's frozen base)."""
    from torch.distributed._tools import MemTracker
    from torch.distributed._tools.mem_tracker import _MemRefType

    class Tracker(MemTracker):
        def _track_module_params_and_buffers(self, module, install_grad_hooks=True):
            out = super()._track_module_params_and_buffers(module, install_grad_hooks=False)
            for p in module.parameters() if install_grad_hooks else ():
                if p.requires_grad and self._param_to_grad_hook_handles.get(p) is None:
                    self._param_to_grad_hook_handles[p] = (
                        p.register_hook(self._gradient),
                        p.register_post_accumulate_grad_hook(lambda q: self._gradient(q.grad)),
                    )
            return out

        def _gradient(self, grad):
            self._update_and_maybe_create_winfos(grad, _MemRefType.GRAD)

    return Tracker()


def measure(cfg, tokens: dict) -> dict:
    model = build_real(cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    o = cfg.optimizer
    optimizer = torch.optim.AdamW(
        params, lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay, foreach=True
    )
    kwargs, targets = step_inputs(model, tokens)
    train_step(model, optimizer, kwargs, targets, params)  # the optimizer state exists from now on
    found = {}

    def at_end_of_backward():
        found["gradients"] = sum(p.grad.untyped_storage().nbytes() for p in params if p.grad is not None)

    fb = memory_tracker()
    fb.track_external(model, optimizer, *[t for t in [*kwargs.values(), *targets] if isinstance(t, torch.Tensor)])
    with fb:  # forward + backward alone: what is live besides weights and optimizer state at its peak
        with torch.autocast("cpu", dtype=torch.bfloat16):
            video, audio = model(**kwargs)
            loss = ((video.float() - targets[0]) ** 2).mean() + ((audio.float() - targets[1]) ** 2).mean()
        loss.backward()
    peak = fb.get_tracker_snapshot("peak")[torch.device("cpu")]
    activations = peak["Total"] - peak["Parameter"] - peak["Buffer"] - peak["Optstate"] - peak["Gradient"]
    optimizer.zero_grad(set_to_none=True)
    del video, audio, loss
    full = memory_tracker()
    full.track_external(model, optimizer, *[t for t in [*kwargs.values(), *targets] if isinstance(t, torch.Tensor)])
    with full:
        train_step(model, optimizer, kwargs, targets, params, at_end_of_backward)
    total = full.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"]
    state = {
        t.untyped_storage()._cdata: t.untyped_storage().nbytes()
        for s in optimizer.state.values()
        for t in s.values()
        if torch.is_tensor(t)
    }
    weights = {p.untyped_storage()._cdata: p.untyped_storage().nbytes() for p in model.parameters()}
    return {
        "weights": sum(weights.values()),
        "gradients": found["gradients"],
        "optimizer_state": sum(state.values()),
        "activations": activations,
        "step_peak": total,
    }


# ---------------------------------------------------------------------------------------------- report
def fmt(n: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:8.2f} {unit}"
    return f"{n:8.0f} B  "


def run_case(name: str, directory: Path) -> dict:
    variant, blocks, overrides = CASES[name]
    cfg = recipe(directory, variant, blocks, overrides)
    started = time.perf_counter()
    est = estimate(cfg)
    est_s = time.perf_counter() - started
    started = time.perf_counter()
    got = measure(cfg, est["tokens"])
    meas_s = time.perf_counter() - started
    t = est["tokens"]
    print(
        f"\n{name}: {variant} with {blocks} blocks, {cfg.train.method}, checkpointing "
        f"{'on' if cfg.train.gradient_checkpointing else 'off'}, bucket {t['bucket']} "
        f"({t['video']} video + {t['audio']} audio + {t['text']} text tokens); estimate {est_s:.0f} s, "
        f"measured step {meas_s:.0f} s"
    )
    print(f"  {'part':<16}{'estimate':>14}{'measured':>14}{'ratio':>8}")
    ratios = {}
    for part in ("weights", "gradients", "optimizer_state", "activations", "step_peak"):
        ratios[part] = est[part] / got[part] if got[part] else float("nan")
        print(f"  {part:<16}{fmt(est[part]):>14}{fmt(got[part]):>14}{ratios[part]:8.3f}")
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="*", default=list(DEFAULT), choices=sorted(CASES))
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        results = {name: run_case(name, Path(tmp)) for name in args.cases}
    print("\nratios estimate / measured")
    print(json.dumps({k: {p: round(r, 3) for p, r in v.items()} for k, v in results.items()}, indent=1))


if __name__ == "__main__":
    main()
