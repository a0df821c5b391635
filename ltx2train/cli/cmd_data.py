"""``ltx2train prepare`` and ``ltx2train data scan | validate | prepare``: the dataset and its cache."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ltx2train.cli.common import Subcommands, add_recipe, common_flags, kept_or_rejected, load_recipe

if TYPE_CHECKING:
    from ltx2train.config import Config


def cmd_prepare(args: argparse.Namespace) -> int:
    """Every dataset of the recipe in turn. Exit 0: every row cached; 4: some rows rejected (listed in
    CACHE/rejects.jsonl), the rest cached; 5: nothing kept (in some dataset)."""
    from ltx2train.config import dataset_sources
    from ltx2train.data.shards import Shard

    shard = Shard.parse(args.shard) if args.shard else None
    cfg = load_recipe(args, ("model.checkpoint", "model.text_encoder", "data.metadata"))
    codes = [_prepare_one(cfg, source, shard, args.overwrite) for source in dataset_sources(cfg.data)]
    return max(codes)


def _prepare_one(cfg: Config, source, shard, overwrite: bool) -> int:
    from ltx2train.data.cache import REJECTS
    from ltx2train.data.prepare import prepare

    report = prepare(cfg, shard=shard, overwrite=overwrite, source=source)
    if not report.main:  # under a launcher the main process reports every process' clips
        return 0
    part = f" (shard {shard.index}/{shard.count})" if shard else ""
    kept = len(report.encoded) + len(report.skipped)
    print(
        f"prepare{part}: {kept} kept ({len(report.encoded)} encoded, {len(report.skipped)} "
        f"already cached), {len(report.rejected)} rejected in {report.seconds:.1f}s -> {source.cache_dir}"
    )
    for reject in report.rejected:
        print(f"  rejected: {reject['path'] or '(row ' + str(reject['index']) + ')'}: {reject['reason']}")
    if shard:
        print(
            "manifest written: every shard is done"
            if report.manifest
            else "manifest not written yet: the last shard to finish writes it"
        )
    if report.rejected and report.manifest:
        print(f"rejects: {Path(source.cache_dir) / REJECTS}")
    return kept_or_rejected(
        kept, len(report.rejected), f"nothing was kept from {source.metadata}: every row was rejected (or it is empty)"
    )


def cmd_data_scan(args: argparse.Namespace) -> int:
    from ltx2train.data.scan import scan, write_metadata

    report = scan(args.directory)
    output = Path(args.output) if args.output else Path(args.directory) / "metadata.jsonl"
    write_metadata(report, output)
    print(f"scan: {len(report.rows)} clip(s) with captions, {len(report.rejects)} rejected -> {output}")
    for reject in report.rejects:
        print(f"  rejected: {reject['path']}: {reject['reason']}")
    return kept_or_rejected(len(report.rows), len(report.rejects), f"no captioned clips under {args.directory}")


def cmd_data_validate(args: argparse.Namespace) -> int:
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
    print(
        f"validate: {s['kept']} of {s['rows']} row(s) usable, {s['rejected']} rejected "
        f"({s['variable_frame_rate']} variable frame rate, {s['without_audio']} without audio, {s['rotated']} "
        f"rotated) -> {summary_path}"
    )
    if s["buckets"]:
        print("  buckets: " + ", ".join(f"{b}: {n}" for b, n in sorted(s["buckets"].items())))
    for reject in report.rejects:
        print(f"  rejected: {reject['path'] or '(row ' + str(reject['index']) + ')'}: {reject['reason']}")
    if report.rejects:
        print(f"rejects: {rejects_path}")
    return kept_or_rejected(len(report.clips), len(report.rejects), "no usable row")


def register(sub: Subcommands) -> None:
    """``prepare`` and ``data``."""
    prepare = sub.add_parser("prepare", help="encode clips + captions into the latent cache")
    add_recipe(prepare)
    prepare.add_argument(
        "--shard",
        metavar="INDEX/COUNT",
        help="encode only the clips with index %% COUNT == INDEX "
        "(one task of a job array, e.g. launch/slurm/prepare.sbatch); the last part to finish "
        "writes the manifest",
    )
    prepare.add_argument(
        "--overwrite",
        action="store_true",
        help="delete what an earlier prepare wrote in data.cache_dir (samples, manifest, rejects) and rebuild it",
    )
    prepare.set_defaults(func=cmd_prepare)
    data = sub.add_parser("data", help="dataset tools: scan a folder, validate metadata, prepare the cache")
    data_sub = Subcommands(data.add_subparsers(dest="data_command", required=True), common_flags())
    scan = data_sub.add_parser("scan", help="metadata.jsonl from a folder of clips with sidecar NAME.txt captions")
    scan.add_argument("directory")
    scan.add_argument("--output", help="metadata file to write (default: DIRECTORY/metadata.jsonl)")
    scan.set_defaults(func=cmd_data_scan)
    check = data_sub.add_parser("validate", help="probe every row of a metadata file; write a report and rejects.jsonl")
    check.add_argument("metadata")
    check.add_argument(
        "--report", help="directory for report.json and rejects.jsonl (default: METADATA_DIR/validation)"
    )
    check.add_argument("--recipe", help="also apply this recipe's buckets and columns (what prepare would do)")
    check.add_argument("overrides", nargs="*", metavar="key=value", help="overrides of --recipe")
    check.set_defaults(func=cmd_data_validate)
    data_prepare = data_sub.add_parser("prepare", help="the same as `ltx2train prepare`")
    add_recipe(data_prepare)
    data_prepare.add_argument("--shard", metavar="INDEX/COUNT", help="see `ltx2train prepare --help`")
    data_prepare.add_argument("--overwrite", action="store_true", help="see `ltx2train prepare --help`")
    data_prepare.set_defaults(func=cmd_prepare)
