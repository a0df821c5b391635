"""The ``ltx2train`` command."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ltx2train.utils.errors import EXIT_CODES, UserError


def _cmd_inspect(args: argparse.Namespace) -> int:
    if args.target == "memory":
        return _inspect_memory(args)
    if args.target.endswith((".yaml", ".yml")):
        return _inspect_recipe(args)
    if args.overrides or args.world_size is not None:
        raise UserError(f"inspect {args.target}: key=value overrides and --world-size go with 'inspect memory' only")
    if args.target == "variant":
        if not args.name:
            raise UserError("inspect variant: name a variant (ltx2-19b, ltx2.3-22b, ltx2.5, tiny, tiny-2.3, tiny-2.5) "
                             "or a variant JSON file")
        return _inspect_variant(args.name, args.json)
    if args.name:
        raise UserError(f"inspect {args.target}: unexpected argument {args.name!r}")
    return _inspect_file(args.target, args.json)


def _inspect_memory(args: argparse.Namespace) -> int:
    """The per-GPU memory estimate of a recipe, from the variant spec alone (no weights, no data)."""
    if not args.name:
        raise UserError("inspect memory: name a recipe, e.g. ltx2train inspect memory recipes/t2av_lora.yaml")
    from ltx2train.config import load_config
    from ltx2train.analysis.estimate import estimate_memory
    from ltx2train.analysis.report import format_estimate

    cfg = load_config(args.name, args.overrides)
    estimate = estimate_memory(cfg, world_size=args.world_size)
    if args.json:
        json.dump(estimate.to_json(), sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(format_estimate(estimate, cfg, args.name))
    return 0


def _inspect_recipe(args: argparse.Namespace) -> int:
    """The resolved recipe, its caches' buckets, the tokens per step and the memory estimate."""
    from ltx2train.config import load_config
    from ltx2train.recipe_report import format_report, recipe_report

    cfg = load_config(args.target, [args.name, *args.overrides] if args.name else args.overrides)
    report = recipe_report(cfg, world_size=args.world_size or int(os.environ.get("WORLD_SIZE", "1")))
    if args.json:
        json.dump(report, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(format_report(report, args.target))
    return 0


def _inspect_file(path: str, as_json: bool) -> int:
    from ltx2train.models.identify import inspect_file

    report = inspect_file(path)
    if as_json:
        json.dump(report, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    print(f"{path}: {_describe(report)}")
    for key in ("dialect", "modules", "ranks", "alpha", "streams", "dtypes", "consumers", "metadata"):
        if key in report and report[key] not in (None, {}, []):
            print(f"  {key}: {_plain(report[key])}")
    for stream, kinds in report.get("targets", {}).items():
        print(f"  targets ({stream}): {_plain(kinds)}")
    for comp in report.get("components", []):
        problems = (f", {len(comp['missing'])} missing (e.g. {comp['missing'][:3]})" if comp["missing"] else "") + \
                   (f", {len(comp['wrong_shape'])} with the wrong shape (e.g. {comp['wrong_shape'][:3]})" if comp["wrong_shape"] else "")
        print(f"  {comp['component']}: {comp['tensors']} tensors ({comp['file_layout']}){problems or ', complete'}")
    if report.get("extra_keys"):
        print(f"  {len(report['extra_keys'])} key(s) of no known component, e.g. {report['extra_keys'][:3]}")
    return 0


def _describe(report: dict) -> str:
    if report["kind"] == "lora":
        return f"LoRA ({report['dialect']}), {report['modules']} modules"
    if report["kind"] == "components":
        names = ", ".join(c["component"] for c in report["components"])
        alike = f" (the same layout as {', '.join(report['same_layout'])})" if report.get("same_layout") else ""
        return f"{report['version']} weights, variant {report['variant']}{alike}: {names}"
    return "not an LTX-2 component or LoRA file known to ltx2train"


def _plain(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def _lora_source(source: str):
    """A LoRA file, a checkpoint directory (``step_N/``) or a run directory (its latest checkpoint)."""
    from pathlib import Path

    from ltx2train.training import checkpoint as ckpt

    path = Path(source)
    if path.is_file():
        return path
    if (path / ckpt.LORA_FILE).is_file():
        return path / ckpt.LORA_FILE
    latest = ckpt.latest_checkpoint(path) if path.is_dir() else None
    if latest is not None:
        return latest / ckpt.LORA_FILE
    raise FileNotFoundError(f"{source} is neither a LoRA .safetensors file, nor a checkpoint directory with "
                            f"{ckpt.LORA_FILE}, nor a run directory with checkpoints/")


def _cmd_export(args: argparse.Namespace) -> int:
    from ltx2train.export.lora import export_lora_file, prepare_lora
    from ltx2train.models.lora_files import read_lora
    from ltx2train.models.specs import torch_dtype

    dtype = torch_dtype(args.dtype) if args.dtype else None
    source = _lora_source(args.source)
    if args.merge:
        from ltx2train.export.merge import merge_lora

        if args.format != "official":
            raise UserError("--merge writes base weights, not a LoRA: --format does not apply to it")

        lora, warnings = prepare_lora(read_lora(source), modality=args.modality,
                                      cross_modal=args.cross_modal, drop_connectors=args.drop_connectors)
        result = merge_lora(lora, args.merge, args.output, dtype=dtype)
        for warning in warnings:
            print(f"ltx2train: warning: {warning}", file=sys.stderr)
        print(f"merged {len(lora.modules)} LoRA modules into {result.merged} weights of {args.merge} "
              f"({result.copied} tensors copied through) -> {', '.join(str(p) for p in result.paths)}")
        return 0
    result = export_lora_file(source, args.output, fmt=args.format, modality=args.modality,
                              cross_modal=args.cross_modal, dtype=dtype, drop_connectors=args.drop_connectors)
    for warning in result.warnings:
        print(f"ltx2train: warning: {warning}", file=sys.stderr)
    print(f"exported {result.modules} LoRA modules ({args.format}, modality {args.modality}"
          f"{f', {result.dropped} left out' if result.dropped else ''}) -> {result.path}")
    return 0


def _inspect_variant(name: str, as_json: bool) -> int:
    from ltx2train.models.key_maps import iter_component_maps, original_keys_with_shapes
    from ltx2train.models.specs import load_variant

    variant = load_variant(name)
    per_component = {
        name: original_keys_with_shapes(key_map, module) for name, module, key_map in iter_component_maps(variant)
    }
    if as_json:
        merged = {k: list(s) for shapes in per_component.values() for k, s in shapes.items()}
        json.dump(merged, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    print(f"variant {variant.name} (LTX-{variant.family}): {variant.description}")
    for name, shapes in per_component.items():
        numel = sum(_prod(s) for s in shapes.values())
        print(f"\n[{name}] {len(shapes)} tensors, {numel:,} elements")
        for key in sorted(shapes):
            print(f"  {key}  {list(shapes[key])}")
    return 0


def _prod(shape) -> int:
    out = 1
    for s in shape:
        out *= s
    return out


def _cmd_tiny(args: argparse.Namespace) -> int:
    from ltx2train.inference.smoke import run_tiny

    result = run_tiny(args.output, seed=args.seed, variant=args.variant)
    print(f"{args.variant} LTX-2 written to {result['model_dir']} (repackaged layout + upscaler + gemma/) "
          f"in {result['write_s']:.1f}s; reloaded strictly in {result['load_s']:.1f}s")
    print(f"sample (LTX2Pipeline, h264 + AAC): {result['sample']} in {result['sample_s']:.1f}s")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from ltx2train.demo import run_demo

    from ltx2train.utils.progress import console

    run_demo(args.output, args.overrides, log=console, variant=args.variant)
    return 0


def _load(args: argparse.Namespace, check_paths):
    from ltx2train.config import load_config

    return load_config(args.recipe, args.overrides, check_paths=check_paths)


SOME_REJECTED, NOTHING_KEPT = 4, 5  # prepare, data scan, data validate


def _kept_or_rejected(kept: int, rejected: int, nothing: str) -> int:
    """0 when every row was kept, 4 when some were rejected, 5 (with ``nothing`` on stderr) when none was kept."""
    if kept == 0:
        print(f"ltx2train: error: {nothing}", file=sys.stderr)
        return NOTHING_KEPT
    return SOME_REJECTED if rejected else 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    """Every dataset of the recipe in turn. Exit 0: every row cached; 4: some rows rejected (listed in
    CACHE/rejects.jsonl), the rest cached; 5: nothing kept (in some dataset)."""
    from ltx2train.config import dataset_sources
    from ltx2train.data.prepare import Shard

    shard = Shard.parse(args.shard) if args.shard else None
    cfg = _load(args, ("model.checkpoint", "model.text_encoder", "data.metadata"))
    codes = [_prepare_one(cfg, source, shard, args.overwrite) for source in dataset_sources(cfg.data)]
    return max(codes)


def _prepare_one(cfg, source, shard, overwrite: bool) -> int:
    from ltx2train.data.cache import REJECTS
    from ltx2train.data.prepare import prepare

    report = prepare(cfg, shard=shard, overwrite=overwrite, source=source)
    part = f" (shard {shard.index}/{shard.count})" if shard else ""
    kept = len(report.encoded) + len(report.skipped)
    print(f"prepare{part}: {kept} kept ({len(report.encoded)} encoded, {len(report.skipped)} "
          f"already cached), {len(report.rejected)} rejected in {report.seconds:.1f}s -> {source.cache_dir}")
    for reject in report.rejected:
        print(f"  rejected: {reject['path'] or '(row ' + str(reject['index']) + ')'}: {reject['reason']}")
    if shard:
        print("manifest written: every shard is done" if report.manifest else
              "manifest not written yet: the last shard to finish writes it")
    if report.rejected and report.manifest:
        print(f"rejects: {Path(source.cache_dir) / REJECTS}")
    return _kept_or_rejected(kept, len(report.rejected),
                             f"nothing was kept from {source.metadata}: every row was rejected (or it is empty)")


def _cmd_train(args: argparse.Namespace) -> int:
    from ltx2train.training.trainer import Trainer

    from ltx2train.utils.progress import console

    cfg = _load(args, ("model.checkpoint", "data.cache_dir", "lora.init_from"))
    result = Trainer(cfg, log=console).train()
    if result.interrupted:
        if result.main:
            print(f"stopped by {result.interrupted} at step {result.step}; checkpoint: {result.checkpoint}")
        return 3
    if result.main:
        print(f"trained to step {result.step}; latest checkpoint: {result.checkpoint}")
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    from ltx2train.inference.sample import sample

    for key, value in (("video_decoder", args.video_decoder), ("num_frames", args.num_frames)):
        if value and value != "auto":  # the recipe's validation settings, checked as the recipe's are
            args.overrides = [*(args.overrides or []), f"validation.{key}={value}"]
    cfg = _load(args, ("model.checkpoint", "model.text_encoder"))
    loras, output = args.lora or [], args.output or f"{cfg.train.output_dir}/sample"
    scales = args.lora_scale or [1.0] * len(loras)
    diffsynth_pipeline = args.two_stage or args.distilled_pipeline or args.low_vram or args.stage2_lora or args.upscaler
    if diffsynth_pipeline:
        for given, flag in ((args.transformer, "--transformer"), (args.audio, "--audio"), (args.video, "--video")):
            if given:
                raise UserError(f"{flag}: samples through the validation pipeline only; drop --two-stage / "
                                 "--distilled-pipeline / --low-vram / --stage2-lora / --upscaler")
        from ltx2train.inference.sample import sample_with_pipeline

        paths = sample_with_pipeline(
            cfg, loras=loras, lora_scales=scales, prompts=args.prompt, seed=args.seed, output_dir=output,
            image=args.image, reference_video=args.reference_video, two_stage=args.two_stage,
            distilled=args.distilled_pipeline, upscaler=args.upscaler, stage2_lora=args.stage2_lora,
            low_vram=args.low_vram, num_frames="auto" if args.num_frames == "auto" else None)
    else:
        paths, _ = sample(cfg, lora=loras, prompts=args.prompt, seed=args.seed, transformer=args.transformer,
                          output_dir=output, lora_scale=scales, image=args.image, reference_video=args.reference_video,
                          audio=args.audio, video=args.video, num_frames="auto" if args.num_frames == "auto" else None)
    for path in paths:
        print(path)
    return 0


def _cmd_from_diffsynth(args: argparse.Namespace) -> int:
    from ltx2train.compat.diffsynth.training import write_recipe

    tokens, output = [t for i, t in enumerate(args.source) if not (i == 0 and t == "--")], args.output
    if "--output" in tokens:  # after the script: from-diffsynth SCRIPT.sh --output recipe.yaml
        at = tokens.index("--output")
        output, tokens = tokens[at + 1], tokens[:at] + tokens[at + 2:]
    source = tokens[0] if len(tokens) == 1 and not tokens[0].startswith("--") else tokens
    path, recipe = write_recipe(source, output)
    print(f"from-diffsynth: {len(recipe.values)} field(s) -> {path}")
    for flag, why in recipe.unconverted.items():
        print(f"  --{flag}: no equivalent ({why})")
    print(f"next: ltx2train prepare {path} && ltx2train train {path}")
    return 0


def _cmd_data_scan(args: argparse.Namespace) -> int:
    from ltx2train.data.scan import scan, write_metadata

    report = scan(args.directory)
    output = Path(args.output) if args.output else Path(args.directory) / "metadata.jsonl"
    write_metadata(report, output)
    print(f"scan: {len(report.rows)} clip(s) with captions, {len(report.rejects)} rejected -> {output}")
    for reject in report.rejects:
        print(f"  rejected: {reject['path']}: {reject['reason']}")
    return _kept_or_rejected(len(report.rows), len(report.rejects), f"no captioned clips under {args.directory}")


def _cmd_data_validate(args: argparse.Namespace) -> int:
    """Exit codes as prepare's: 0 every row usable, 4 some rejected, 5 none usable."""
    from ltx2train.data.probe import validate, write_report

    settings, columns = None, {}
    if args.recipe:
        from ltx2train.config import load_config
        from ltx2train.data.metadata import Columns
        from ltx2train.data.prepare import settings_from_config

        cfg = load_config(args.recipe, args.overrides)
        settings = settings_from_config(cfg)
        columns = dict(columns=Columns.of(cfg.data), root=cfg.data.root)
    report = validate(args.metadata, settings=settings, **columns)
    directory = Path(args.report) if args.report else Path(args.metadata).parent / "validation"
    summary_path, rejects_path = write_report(report, directory)
    s = report.summary()
    print(f"validate: {s['kept']} of {s['rows']} row(s) usable, {s['rejected']} rejected "
          f"({s['variable_frame_rate']} variable frame rate, {s['without_audio']} without audio, {s['rotated']} "
          f"rotated) -> {summary_path}")
    if s["buckets"]:
        print("  buckets: " + ", ".join(f"{b}: {n}" for b, n in sorted(s["buckets"].items())))
    for reject in report.rejects:
        print(f"  rejected: {reject['path'] or '(row ' + str(reject['index']) + ')'}: {reject['reason']}")
    if report.rejects:
        print(f"rejects: {rejects_path}")
    return _kept_or_rejected(len(report.clips), len(report.rejects), "no usable row")


def _add_recipe(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="YAML recipe (see recipes/), or a run's saved config.yaml")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="recipe overrides, e.g. train.max_steps=100")


def _common() -> argparse.ArgumentParser:
    """Flags every command takes."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", action="store_true", help="no progress bars or progress lines (warnings, errors "
                        "and the result still print)")
    common.add_argument("--debug", action="store_true", help="show the traceback of a user error (a bad recipe, "
                        "key or file), not only its message")
    return common


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ltx2train", description="Fine-tune LTX-2 audio-video models.")
    sub = _Subcommands(parser.add_subparsers(dest="command", required=True), _common())

    inspect = sub.add_parser("inspect", help="what a safetensors file is, a shipped variant's layout, or the memory a "
                             "recipe needs per GPU",
                             description="inspect FILE: a LoRA (dialect, ranks, alpha, targets by stream, consumers) "
                             "or LTX-2 component weights (component, variant, missing keys). "
                             "inspect variant NAME: every original key of a shipped variant with its shape. "
                             "inspect memory RECIPE [key=value ...]: the per-GPU memory estimate of training it "
                             "(from the variant spec; no weights needed). "
                             "inspect RECIPE [key=value ...]: the resolved config, each dataset's cache (clips per "
                             "bucket, rejects), the tokens per step and the memory estimate.")
    inspect.add_argument("target", help="a .safetensors file, a recipe .yaml, or the word 'variant' or 'memory'")
    inspect.add_argument("name", nargs="?", help="with 'variant': ltx2-19b, ltx2.3-22b, ltx2.5, tiny, tiny-2.3, tiny-2.5 "
                         "or a variant JSON file; "
                         "with 'memory': a recipe YAML")
    inspect.add_argument("overrides", nargs="*", metavar="key=value", help="with a recipe: its overrides")
    inspect.add_argument("--world-size", type=int, help="with a recipe: processes (default: $WORLD_SIZE or 1)")
    inspect.add_argument("--json", action="store_true", help="machine-readable output")
    inspect.set_defaults(func=_cmd_inspect)

    export = sub.add_parser("export", help="a checkpoint's LoRA in another format / modality / dtype, or merged into a base")
    export.add_argument("source", help="LoRA .safetensors (any dialect), a checkpoint step_N/ directory or a run directory")
    export.add_argument("--output", required=True, help="output .safetensors (or, with --merge, a directory for the "
                        "repackaged layout)")
    export.add_argument("--format", default="official", choices=("official", "diffusers", "official-alpha"),
                        help="official: alpha folded, loads alike everywhere (default); diffusers: for "
                        "load_lora_weights; official-alpha: keeps .alpha tensors")
    export.add_argument("--modality", default="all", choices=("all", "video", "audio"),
                        help="keep the modules acting on the video or the audio stream only")
    export.add_argument("--cross-modal", default="receiving", choices=("receiving", "none", "all"),
                        help="with --modality: receiving keeps the cross-modal attention writing into the kept stream "
                        "(audio_to_video_attn for video, video_to_audio_attn for audio); none drops both; all keeps both")
    export.add_argument("--merge", metavar="BASE", help="merge into BASE (official single file or repackaged directory)")
    export.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), help="dtype of the written tensors")
    export.add_argument("--drop-connectors", action="store_true",
                        help="leave out LoRA modules on the text connectors (only ComfyUI applies them)")
    export.set_defaults(func=_cmd_export)

    tiny = sub.add_parser("tiny", help="write the tiny random-weight LTX-2, reload it and render a sample mp4")
    tiny.add_argument("--output", default="outputs/tiny", help="output directory (default: outputs/tiny)")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--variant", default="tiny", choices=("tiny", "tiny-2.3", "tiny-2.5"),
                      help="the architecture: tiny (LTX-2), tiny-2.3, tiny-2.5")
    tiny.set_defaults(func=_cmd_tiny)

    demo = sub.add_parser("demo", help="tiny model + synthetic clips: prepare -> train LoRA -> checkpoint -> sample")
    demo.add_argument("--output", default="outputs/demo", help="output directory (default: outputs/demo)")
    demo.add_argument("--variant", choices=("tiny", "tiny-2.3", "tiny-2.5"),
                      help="the tiny architecture to run: tiny (LTX-2, the default), tiny-2.3 (LTX-2.3), tiny-2.5 (LTX-2.5)")
    demo.add_argument("overrides", nargs="*", metavar="key=value", help="overrides of recipes/demo.yaml")
    demo.set_defaults(func=_cmd_demo)

    prepare = sub.add_parser("prepare", help="encode clips + captions into the latent cache")
    _add_recipe(prepare)
    prepare.add_argument("--shard", metavar="INDEX/COUNT", help="encode only the clips with index %% COUNT == INDEX "
                         "(one task of a job array, e.g. launch/slurm/prepare.sbatch); the last part to finish "
                         "writes the manifest")
    prepare.add_argument("--overwrite", action="store_true", help="delete what an earlier prepare wrote in "
                         "data.cache_dir (samples, manifest, rejects) and rebuild it")
    prepare.set_defaults(func=_cmd_prepare)

    data = sub.add_parser("data", help="dataset tools: scan a folder, validate metadata, prepare the cache")
    data_sub = _Subcommands(data.add_subparsers(dest="data_command", required=True), _common())
    scan = data_sub.add_parser("scan", help="metadata.jsonl from a folder of clips with sidecar NAME.txt captions")
    scan.add_argument("directory")
    scan.add_argument("--output", help="metadata file to write (default: DIRECTORY/metadata.jsonl)")
    scan.set_defaults(func=_cmd_data_scan)
    check = data_sub.add_parser("validate", help="probe every row of a metadata file; write a report and rejects.jsonl")
    check.add_argument("metadata")
    check.add_argument("--report", help="directory for report.json and rejects.jsonl "
                       "(default: METADATA_DIR/validation)")
    check.add_argument("--recipe", help="also apply this recipe's buckets and columns (what prepare would do)")
    check.add_argument("overrides", nargs="*", metavar="key=value", help="overrides of --recipe")
    check.set_defaults(func=_cmd_data_validate)
    data_prepare = data_sub.add_parser("prepare", help="the same as `ltx2train prepare`")
    _add_recipe(data_prepare)
    data_prepare.add_argument("--shard", metavar="INDEX/COUNT", help="see `ltx2train prepare --help`")
    data_prepare.add_argument("--overwrite", action="store_true", help="see `ltx2train prepare --help`")
    data_prepare.set_defaults(func=_cmd_prepare)

    train = sub.add_parser("train", help="train (resumes from the latest checkpoint in train.output_dir)")
    _add_recipe(train)
    train.set_defaults(func=_cmd_train)

    convert = sub.add_parser("from-diffsynth", help="a DiffSynth-Studio LTX-2 training script (or its train.py "
                             "flags) -> the equivalent recipe")
    convert.add_argument("source", nargs=argparse.REMAINDER, help="the script (one or both passes of a split one), "
                         "or train.py's flags themselves after -- (from-diffsynth --output R.yaml -- --lora_rank 32 ...)")
    convert.add_argument("--output", default="recipe.yaml", help="the recipe to write (default: recipe.yaml)")
    convert.set_defaults(func=_cmd_from_diffsynth)
    sample = sub.add_parser("sample", help="base model (or a fine-tuned transformer) + LoRA -> mp4 through the "
                            "inference pipeline")
    _add_recipe(sample)
    sample.add_argument("--lora", action="append", help="LoRA .safetensors (any dialect), e.g. a checkpoint's "
                        "lora.safetensors; repeatable: the LoRAs apply together")
    sample.add_argument("--transformer", help="a fully fine-tuned transformer instead of model.checkpoint's: a "
                        "checkpoint directory (train.method=full) or its transformer.safetensors")
    sample.add_argument("--lora-scale", type=float, action="append",
                        help="strength of each --lora, in order (default 1.0 each)")
    sample.add_argument("--image", help="every prompt's first frame (image-to-video, strategy i2av)")
    sample.add_argument("--reference-video", help="every prompt's reference video (IC-LoRA, strategy ic_lora)")
    sample.add_argument("--audio", help="every prompt's given audio, an audio or video file (strategy a2v)")
    sample.add_argument("--video", help="every prompt's given video (strategy v2a)")
    sample.add_argument("--num-frames", help="the clips' length (8k+1 frames; default: validation.num_frames), or "
                        "auto: each prompt's own, from LTX-2.5's duration head")
    sample.add_argument("--video-decoder", choices=("conv", "diffusion"),
                        help="what decodes the video: the VAE's conv decoder, or LTX-2.5's diffusion decoder "
                        "(default: validation.video_decoder)")
    av = sample.add_argument_group("through LTX2AudioVideoPipeline (DiffSynth's pipeline) instead of validation's")
    av.add_argument("--two-stage", action="store_true", help="half size, x2 upscaler, stage 2 with --stage2-lora")
    av.add_argument("--distilled-pipeline", action="store_true", help="the distilled model's fixed 8-step schedule")
    av.add_argument("--upscaler", help="the x2 spatial upscaler file (default: the one beside model.checkpoint)")
    av.add_argument("--stage2-lora", help="the stage-2 distilled LoRA (two-stage)")
    av.add_argument("--low-vram", action="store_true", help="FP8 storage and block swap of the transformer")
    sample.add_argument("--prompt", action="append", help="prompt (repeatable; default: the recipe's validation prompts)")
    sample.add_argument("--seed", type=int, help="default: validation.seed")
    sample.add_argument("--output", help="directory for the mp4 files (default: <train.output_dir>/sample)")
    sample.set_defaults(func=_cmd_sample)
    return parser


class _Subcommands:
    """``add_parser`` with the common flags on every command."""

    def __init__(self, subparsers, common: argparse.ArgumentParser):
        self.subparsers, self.common = subparsers, common

    def add_parser(self, name: str, **kwargs) -> argparse.ArgumentParser:
        return self.subparsers.add_parser(name, parents=[self.common], **kwargs)


def _quiet_library_progress_bars() -> None:
    """The command prints its own progress; per-file loading bars of transformers would drown it."""
    try:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


# the user's mistakes (utils/errors.py): a message, no traceback, exit 2; anything else is a bug
USER_ERRORS = (UserError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)
REPORT = ("ltx2train: internal error (a bug in ltx2train, not in your recipe or data): please report it with the "
          "command line and the traceback above")


def _message(exc: BaseException) -> str:
    """The user's error in words: a KeyError's ``str`` is its quoted key; a file error names the file."""
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in str(exc):
        return f"{exc.strerror or exc}: {exc.filename}"
    return str(exc)


EXIT_FILE_VARIABLE = "LTX2TRAIN_EXIT_FILE"


def main(argv: list[str] | None = None) -> int:
    """Exit codes (``utils/errors.py: EXIT_CODES``): 0 done, 2 a user error (a ``UserError`` or a file that is not
    there; no traceback unless ``--debug``), 3 stopped by a signal after writing a checkpoint (resume by running
    the same command again), 1 a bug (its traceback and a line asking to report it); ``prepare``: 4 some rows
    rejected (the rest cached), 5 nothing kept.

    Under a launcher that hides the processes' codes (torchrun reports any non-zero code as 1, and srun
    ``--kill-on-bad-exit`` then kills the other nodes, perhaps before the main process is done), set
    ``LTX2TRAIN_EXIT_FILE``: the global main process writes its code there as JSON, and every process exits 0
    for every code above but a crash (1) -- launch/slurm/train.sbatch reads the file."""
    from ltx2train.utils.progress import set_quiet

    args = build_parser().parse_args(argv)
    set_quiet(getattr(args, "quiet", False))
    if args.command != "inspect":
        _quiet_library_progress_bars()
    code = 1
    try:
        code = args.func(args)
    except USER_ERRORS as exc:
        if getattr(args, "debug", False):
            import traceback

            traceback.print_exc()
        print(f"ltx2train: error: {_message(exc)}", file=sys.stderr)
        code = 2
    except Exception:
        import traceback

        traceback.print_exc()
        print(REPORT, file=sys.stderr)
        raise
    finally:
        reported = _write_exit_file(args.command, code)
    return 0 if reported and code in EXIT_CODES and code != 1 else code


def _write_exit_file(command: str, code: int) -> bool:
    """Whether ``LTX2TRAIN_EXIT_FILE`` is set (the global main process writes the code there)."""
    path = os.environ.get(EXIT_FILE_VARIABLE)
    if not path:
        return False
    if os.environ.get("RANK", "0") == "0":
        from ltx2train.utils.atomic import write_text_atomic

        write_text_atomic(path, json.dumps({"command": command, "exit_code": code, "meaning": EXIT_CODES.get(code, "")}))
    return True


if __name__ == "__main__":
    sys.exit(main())
