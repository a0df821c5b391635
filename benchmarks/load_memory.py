"""Peak host memory of loading a transformer: ltx2train's meta-device loader vs the naive way.

Writes a random LTX-2 19B transformer with production widths and a reduced number of blocks in the
repackaged layout, then loads it in fresh processes and prints peak RSS over the size of the weights,
measured side by side in one run. The naive way (build the module with real random init, read the whole
state dict, ``load_state_dict``) holds the weights about twice; the meta-device loader about once.

    python benchmarks/load_memory.py --layers 2
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import torch


def _variant(layers: int):
    from ltx2train.models.specs import ComponentSpec, VariantSpec, load_variant

    base = load_variant("ltx2-19b")
    spec = base.component("transformer")
    cfg = dict(spec.config, num_layers=layers)
    return VariantSpec(
        base.name, base.family, base.description, {"transformer": ComponentSpec("transformer", spec.class_name, cfg)}
    )


def _write(path: Path, layers: int) -> int:
    from ltx2train.models.writing import save_repackaged

    module = _variant(layers).component("transformer").build().to(torch.bfloat16)
    save_repackaged({"transformer": module}, path, "2.0")
    return sum(p.numel() * p.element_size() for p in module.state_dict().values())


def _hwm_kib() -> int:
    """Peak resident set of this process (VmHWM; unlike ru_maxrss it is not inherited across fork+exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _measure(mode: str, path: Path, layers: int) -> None:
    before = _hwm_kib()
    if mode == "ltx2train":
        from ltx2train.models.loading import load_component

        module = load_component(_variant(layers), "transformer", path, dtype=torch.bfloat16)
    else:
        from safetensors.torch import load_file

        from ltx2train.models.key_maps import build_key_map

        module = _variant(layers).component("transformer").build()
        module = module.to(torch.bfloat16)
        state, _ = build_key_map("transformer", module).convert_to_diffusers(
            load_file(str(path / "transformer.safetensors"))
        )
        module.load_state_dict(state)
        del state
    peak = _hwm_kib()
    print(json.dumps({"mode": mode, "peak_kib": peak, "before_kib": before}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--measure", choices=["ltx2train", "naive"])
    parser.add_argument("--path")
    args = parser.parse_args()
    if args.measure:
        _measure(args.measure, Path(args.path), args.layers)
        return
    with tempfile.TemporaryDirectory() as tmp:
        weights = _write(Path(tmp), args.layers)
        results = {}
        for mode in ("ltx2train", "naive"):
            out = subprocess.run(
                [sys.executable, __file__, "--measure", mode, "--path", tmp, "--layers", str(args.layers)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            r = json.loads(out.strip().splitlines()[-1])
            results[mode] = (r["peak_kib"] - r["before_kib"]) * 1024 / weights
        print(f"transformer 19B widths, {args.layers} blocks, bf16 weights {weights / 2**30:.2f} GiB")
        for mode, ratio in results.items():
            print(f"  {mode:10s} peak RSS growth / weight bytes = {ratio:.2f}")
        print(f"  naive / ltx2train = {results['naive'] / results['ltx2train']:.2f}")


if __name__ == "__main__":
    main()
