"""``ltx2train sample``: prompts rendered from a checkpoint, and ``from-diffsynth``: a DiffSynth script -> a recipe."""

from __future__ import annotations

import argparse
from ltx2train.cli.common import Subcommands, add_recipe, load_recipe
from ltx2train.utils.errors import UserError


def cmd_sample(args: argparse.Namespace) -> int:
    from ltx2train.inference.sample import sample

    for key, value in (("video_decoder", args.video_decoder), ("num_frames", args.num_frames)):
        if value and value != "auto":  # the recipe's validation settings, checked as the recipe's are
            args.overrides = [*(args.overrides or []), f"validation.{key}={value}"]
    cfg = load_recipe(args, ("model.checkpoint", "model.text_encoder"))
    loras, output = args.lora or [], args.output or f"{cfg.train.output_dir}/sample"
    scales = args.lora_scale or [1.0] * len(loras)
    diffsynth_pipeline = args.two_stage or args.distilled_pipeline or args.low_vram or args.stage2_lora or args.upscaler
    if diffsynth_pipeline:
        for given, flag in ((args.transformer, "--transformer"), (args.audio, "--audio"), (args.video, "--video")):
            if given:
                raise UserError(
                    f"{flag}: samples through the validation pipeline only; drop --two-stage / "
                    "--distilled-pipeline / --low-vram / --stage2-lora / --upscaler"
                )
        from ltx2train.inference.sample import sample_with_pipeline

        paths = sample_with_pipeline(
            cfg,
            loras=loras,
            lora_scales=scales,
            prompts=args.prompt,
            seed=args.seed,
            output_dir=output,
            image=args.image,
            reference_video=args.reference_video,
            two_stage=args.two_stage,
            distilled=args.distilled_pipeline,
            upscaler=args.upscaler,
            stage2_lora=args.stage2_lora,
            low_vram=args.low_vram,
            num_frames="auto" if args.num_frames == "auto" else None,
        )
    else:
        paths, _ = sample(
            cfg,
            lora=loras,
            prompts=args.prompt,
            seed=args.seed,
            transformer=args.transformer,
            output_dir=output,
            lora_scale=scales,
            image=args.image,
            reference_video=args.reference_video,
            audio=args.audio,
            video=args.video,
            num_frames="auto" if args.num_frames == "auto" else None,
        )
    for path in paths:
        print(path)
    return 0


def cmd_from_diffsynth(args: argparse.Namespace) -> int:
    from ltx2train.compat.diffsynth.training import write_recipe

    tokens, output = [t for i, t in enumerate(args.source) if not (i == 0 and t == "--")], args.output
    if "--output" in tokens:  # after the script: from-diffsynth SCRIPT.sh --output recipe.yaml
        at = tokens.index("--output")
        output, tokens = tokens[at + 1], tokens[:at] + tokens[at + 2 :]
    source = tokens[0] if len(tokens) == 1 and not tokens[0].startswith("--") else tokens
    path, recipe = write_recipe(source, output)
    print(f"from-diffsynth: {len(recipe.values)} field(s) -> {path}")
    for flag, why in recipe.unconverted.items():
        print(f"  --{flag}: no equivalent ({why})")
    print(f"next: ltx2train prepare {path} && ltx2train train {path}")
    return 0


def register(sub: Subcommands) -> None:
    """``from-diffsynth`` and ``sample``."""
    convert = sub.add_parser(
        "from-diffsynth",
        help="a DiffSynth-Studio LTX-2 training script (or its train.py flags) -> the equivalent recipe",
    )
    convert.add_argument(
        "source",
        nargs=argparse.REMAINDER,
        help="the script (one or both passes of a split one), "
        "or train.py's flags themselves after -- (from-diffsynth --output R.yaml -- --lora_rank 32 ...)",
    )
    convert.add_argument("--output", default="recipe.yaml", help="the recipe to write (default: recipe.yaml)")
    convert.set_defaults(func=cmd_from_diffsynth)
    sample = sub.add_parser(
        "sample", help="base model (or a fine-tuned transformer) + LoRA -> mp4 through the inference pipeline"
    )
    add_recipe(sample)
    sample.add_argument(
        "--lora",
        action="append",
        help="LoRA .safetensors (any dialect), e.g. a checkpoint's "
        "lora.safetensors; repeatable: the LoRAs apply together",
    )
    sample.add_argument(
        "--transformer",
        help="a fully fine-tuned transformer instead of model.checkpoint's: a "
        "checkpoint directory (train.method=full) or its transformer.safetensors",
    )
    sample.add_argument(
        "--lora-scale", type=float, action="append", help="strength of each --lora, in order (default 1.0 each)"
    )
    sample.add_argument("--image", help="every prompt's first frame (image-to-video, strategy i2av)")
    sample.add_argument("--reference-video", help="every prompt's reference video (IC-LoRA, strategy ic_lora)")
    sample.add_argument("--audio", help="every prompt's given audio, an audio or video file (strategy a2v)")
    sample.add_argument("--video", help="every prompt's given video (strategy v2a)")
    sample.add_argument(
        "--num-frames",
        help="the clips' length (8k+1 frames; default: validation.num_frames), or "
        "auto: each prompt's own, from LTX-2.5's duration head",
    )
    sample.add_argument(
        "--video-decoder",
        choices=("conv", "diffusion"),
        help="what decodes the video: the VAE's conv decoder, or LTX-2.5's diffusion decoder "
        "(default: validation.video_decoder)",
    )
    av = sample.add_argument_group("through LTX2AudioVideoPipeline (DiffSynth's pipeline) instead of validation's")
    av.add_argument("--two-stage", action="store_true", help="half size, x2 upscaler, stage 2 with --stage2-lora")
    av.add_argument("--distilled-pipeline", action="store_true", help="the distilled model's fixed 8-step schedule")
    av.add_argument("--upscaler", help="the x2 spatial upscaler file (default: the one beside model.checkpoint)")
    av.add_argument("--stage2-lora", help="the stage-2 distilled LoRA (two-stage)")
    av.add_argument("--low-vram", action="store_true", help="FP8 storage and block swap of the transformer")
    sample.add_argument(
        "--prompt", action="append", help="prompt (repeatable; default: the recipe's validation prompts)"
    )
    sample.add_argument("--seed", type=int, help="default: validation.seed")
    sample.add_argument("--output", help="directory for the mp4 files (default: <train.output_dir>/sample)")
    sample.set_defaults(func=cmd_sample)
