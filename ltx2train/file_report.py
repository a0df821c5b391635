"""What a safetensors file is: LTX-2 component weights (which components, which variant, what is missing) or
a LoRA (dialect, ranks, alpha handling, targets by stream, dtypes, and which consumers load it as it is).

Only the file's header is read for component files; a LoRA's tensors are read (they are small).
"""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache
from pathlib import Path

from ltx2train.models.layout import SPLIT_FILES, owner_of
from ltx2train.models.loading import read_safetensors_header
from ltx2train.lora.files import LORA_KEY, LoraFile, is_connector_module, module_stream, read_lora

# Which consumer applies which dialect as it is, at the file's intended strength (measured on the tiny
# model: tests/integration/test_lora_consumers.py). ltx-core fuses W + B·A and ignores .alpha; diffusers refuses files
# with .alpha and does not apply connector modules; DiffSynth reads .alpha; ComfyUI reads .alpha and
# applies connector modules.
CONSUMERS = ("diffusers", "ltx-core", "DiffSynth", "ComfyUI")


@lru_cache(maxsize=None)
def _layout(variant: str) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Original key -> (component, shape) for every component of a shipped variant (built on meta)."""
    from ltx2train.models.specs import load_variant
    from ltx2train.models.version import shipped_layout

    return {
        key: (name, shape)
        for name in load_variant(variant).components
        for key, shape in shipped_layout(variant, name).items()
    }


def inspect_file(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    entries, metadata = read_safetensors_header(path)
    if entries and all(LORA_KEY.match(k) for k in entries):
        return inspect_lora(read_lora(path), path)
    release = release_file_named(path)
    shapes = {(release.original_key(k) if release else k): tuple(e.shape) for k, e in entries.items()}
    report = identify_components(shapes, release, version_hint=metadata.get("model_version"))
    report.update(
        path=str(path), tensors=len(shapes), metadata=metadata, dtypes=dict(Counter(e.dtype for e in entries.values()))
    )
    return report


def release_file_named(path: Path):
    """The entry of ``layout.RELEASE_FILES`` a file's name (with its folder) is, if any."""
    from fnmatch import fnmatch

    from ltx2train.models.layout import RELEASE_FILES

    name = f"{path.parent.name}/{path.name}"
    return next((e for e in RELEASE_FILES if fnmatch(name, e.pattern)), None)


def identify_components(shapes: dict[str, tuple[int, ...]], release=None, version_hint: str | None = None) -> dict:
    """Match a file's keys and shapes against the shipped variants; the best match wins (``same_layout``: the other
    variants whose parts in this file are alike, e.g. LTX-2.3's and 2.5's VAEs). ``release``: the release file it is
    (its keys already brought to the original names). ``version_hint``: the file's ``model_version`` header entry,
    which picks among variants alike in this file (Lightricks' files carry it, "2.3.0")."""
    from ltx2train.models.specs import list_variants, load_variant

    def score(variant):
        layout = _layout(variant)
        return sum(1 for k, s in shapes.items() if k in layout and tuple(layout[k][1]) == s)

    best = max(list_variants(), key=score)
    matched = score(best)
    if matched == 0:
        return {"kind": "unknown", "variant": None, "components": [], "extra_keys": sorted(shapes)[:20]}
    held = {k for k in shapes if k in _layout(best)}
    alike = [
        v
        for v in list_variants()
        if v != best and score(v) == matched and {k for k in shapes if k in _layout(v)} == held
    ]
    hinted = [v for v in alike if version_hint and version_hint.startswith(load_variant(v).family)]
    if hinted and not version_hint.startswith(load_variant(best).family):
        alike = [best, *(v for v in alike if v != hinted[0])]
        best = hinted[0]
    layout = _layout(best)
    present = sorted({layout[k][0] for k in shapes if k in layout})
    components = []
    for component in present:
        expected = _expected_keys(component, layout, shapes)
        if release is not None:
            expected = {
                k for k in expected if release.key_in_file(k) is not None or release.repeated_key(k) is not None
            }
        components.append(
            {
                "component": component,
                "file_layout": f"release file {release.name}" if release else _file_layout(component, shapes),
                "tensors": sum(1 for k in shapes if k in expected),
                "missing": sorted(expected - set(shapes)),
                "wrong_shape": sorted(k for k in expected & set(shapes) if tuple(layout[k][1]) != shapes[k]),
            }
        )
    return {
        "kind": "components",
        "variant": best,
        "version": f"LTX-{load_variant(best).family}",
        "same_layout": alike,
        "components": components,
        "extra_keys": sorted(k for k in shapes if k not in layout),
    }


def _expected_keys(component: str, layout: dict, shapes: dict) -> set[str]:
    """The keys this file should hold for ``component``: all of them, or one VAE half when it is a split file."""
    keys = {k for k, (c, _) in layout.items() if c == component}
    halves = [f for f in SPLIT_FILES if f.component == component and f.part is not None]
    held = [f for f in halves if any(f.holds(k) and f".{f.part}." in k for k in shapes)]
    if len(held) == 1:
        return {k for k in keys if held[0].holds(k)}
    return keys


def _file_layout(component: str, shapes: dict) -> str:
    owners = {owner_of(k) for k in shapes} - {None}
    if len(owners) > 1:
        return "official single file"
    if component == "spatial_upsampler":
        return "spatial upscaler file"
    for split in SPLIT_FILES:
        if split.component == component and all(split.holds(k) for k in shapes if owner_of(k) == component):
            return f"repackaged {split.filename}"
    return "repackaged"


def inspect_lora(lora: LoraFile, path: str | Path | None = None) -> dict:
    modules = lora.modules
    alphas = [w.alpha for w in modules.values() if w.alpha is not None]
    scales = sorted({round(w.scale, 6) for w in modules.values()})
    if not alphas:
        alpha = "none: the weights carry the whole effect (alpha folded, or scale 1)"
    else:
        alpha = f".alpha tensors on {len(alphas)}/{len(modules)} modules (alpha/rank: {', '.join(f'{s:g}' for s in scales)})"
    streams = Counter(module_stream(m) for m in modules)
    targets: dict[str, Counter] = {}
    for m in modules:  # per stream: module kind (block index dropped) -> how many blocks carry it
        kind = re.sub(r"(transformer_blocks|transformer_1d_blocks)\.\d+\.", "", m)
        targets.setdefault(module_stream(m), Counter())[kind] += 1
    return {
        "kind": "lora",
        "path": str(path) if path else None,
        "dialect": lora.dialect,
        "modules": len(modules),
        "ranks": lora.ranks,
        "alpha": alpha,
        "streams": dict(sorted(streams.items())),
        "targets": {stream: dict(sorted(kinds.items())) for stream, kinds in sorted(targets.items())},
        "dtypes": dict(Counter(str(w.down.dtype).replace("torch.", "") for w in modules.values())),
        "metadata": lora.metadata,
        "consumers": consumers(lora),
    }


def consumers(lora: LoraFile) -> dict[str, str]:
    """Per consumer: ``ok``, or what goes wrong when it loads this file as it is. The rules, read from each
    consumer's code and measured on the tiny model (tests/integration/test_lora_consumers.py):

    - diffusers ``load_lora_weights``: converts ``diffusion_model.`` keys, takes ``transformer.`` keys as diffusers
      names, drops prefix-less ones, refuses any ``.alpha`` key, scale 1, connector modules not applied;
    - ltx-core (``apply_loras``, as ltx-pipelines calls it): strips ``diffusion_model.``, matches only
      ``<m>.lora_A.weight``/``lora_B.weight``, ignores ``.alpha`` (W + strength * B @ A), no connector modules;
    - DiffSynth ``GeneralLoRALoader``: strips only ``diffusion_model.``, drops ``.default``, reads ``.alpha`` as
      alpha/rank, no connector modules (its DiT has none);
    - ComfyUI (``comfy/lora.py``): ``diffusion_model.X`` or bare ``X`` for LTX-2, ``.default`` spellings, ``.alpha``
      as alpha/rank, connector modules applied.
    """
    off_scale = any(w.scale != 1.0 for w in lora.modules.values())
    n_conn = sum(1 for m in lora.modules if is_connector_module(m))
    partial = f"ok, but its {n_conn} connector module(s) are not applied" if n_conn else "ok"
    fix = "not loaded as is: export --format official"
    dialect = lora.dialect
    return {
        "diffusers": {
            "official": partial,
            "diffusers": "ok",
            "official-alpha": "refused (.alpha tensors): export --format official",
        }.get(dialect, fix),
        "ltx-core": {
            "official": partial,
            "official-alpha": "wrong strength (ignores .alpha): export --format official" if off_scale else partial,
        }.get(dialect, fix),
        "DiffSynth": partial if dialect != "diffusers" else fix,
        "ComfyUI": "ok" if dialect != "diffusers" else fix,
    }
