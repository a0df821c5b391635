"""``ltx2train from-diffsynth``: a DiffSynth-Studio LTX-2 training command line -> the equivalent recipe.

DiffSynth trains LTX-2 with ``accelerate launch examples/ltx2/model_training/train.py --flag value ...``, often
in two passes (``--task sft:data_process`` encodes the dataset, ``--task sft:train`` trains on what it wrote).
This reads a shell script holding those commands (or the flags themselves), resolves its
``--model_id_with_origin_paths`` / ``--model_paths`` under ``$DIFFSYNTH_MODEL_BASE_PATH`` as DiffSynth would, and
writes a recipe whose every field says which flag it came from. A flag with no equivalent is listed, with why.
``ltx2train prepare RECIPE`` then does the data-processing pass and ``ltx2train train RECIPE`` the training one.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from ltx2train.utils.errors import UserError

# DiffSynth flag -> (our key, how its value converts); value None: a switch
_DIRECT = {
    "dataset_metadata_path": "data.metadata",
    "dataset_repeat": "data.repeats",
    "dataset_num_workers": "data.num_workers",
    "height": "data.height",
    "width": "data.width",
    "num_frames": "data.num_frames",
    "max_pixels": "data.max_pixels",
    "frame_rate": "data.fps",
    "batch_size": "data.batch_size",
    "learning_rate": "optimizer.lr",
    "weight_decay": "optimizer.weight_decay",
    "max_grad_norm": "optimizer.max_grad_norm",
    "num_epochs": "train.num_epochs",
    "save_steps": "train.checkpoint_every",
    "output_path": "train.output_dir",
    "gradient_accumulation_steps": "train.gradient_accumulation_steps",
    "seed": "train.seed",
    "mixed_precision": "train.mixed_precision",
    "lora_rank": "lora.rank",
    "lora_checkpoint": "lora.init_from",
}
_SWITCHES = {
    "use_gradient_checkpointing": "train.gradient_checkpointing",
    "use_gradient_checkpointing_offload": "memory.activation_offload",
}
_INTS = {
    "data.repeats",
    "data.num_workers",
    "data.height",
    "data.width",
    "data.num_frames",
    "data.max_pixels",
    "data.batch_size",
    "train.num_epochs",
    "train.checkpoint_every",
    "train.gradient_accumulation_steps",
    "train.seed",
    "lora.rank",
}
_FLOATS = {"data.fps", "optimizer.lr", "optimizer.weight_decay", "optimizer.max_grad_norm"}
# flags read elsewhere (models, dataset paths, the task, LoRA base / targets, inputs) or that change nothing here
_HANDLED = {
    "model_id_with_origin_paths",
    "model_paths",
    "tokenizer_path",
    "dataset_base_path",
    "data_file_keys",
    "extra_inputs",
    "task",
    "lora_base_model",
    "lora_target_modules",
    "trainable_models",
    "fp8_models",
    "preset_lora_path",
}
_NO_EQUIVALENT = {
    "remove_prefix_in_ckpt": "checkpoints hold the official key layout (diffusion_model.*) that every consumer reads",
    "find_unused_parameters": "the DDP backend finds what it needs itself",
    "initialize_model_on_cpu": "models are built on the meta device and filled on their device",
    "offload_models": "memory.block_swap / memory.fp8_frozen are ltx2train's offload switches",
    "enable_model_cpu_offload": "memory.block_swap is ltx2train's offload switch",
    "preset_lora_model": "presets merge into the DiT (and its text connectors) only",
    "max_timestep_boundary": "for Wan 2.2's two-expert models; LTX-2 samples sigmas from objective.*",
    "min_timestep_boundary": "for Wan 2.2's two-expert models; LTX-2 samples sigmas from objective.*",
    "use_wandb": "set tracker.backend=wandb",
    "use_swanlab": "SwanLab is not a tracker here (wandb, tensorboard)",
}
_TRAINABLE = {"dit": "transformer", "text_encoder_post_modules": "connectors"}  # --trainable_models it converts
_FP8 = {
    "dit": "transformer",
    "text_encoder": "text_encoder",
    "video_vae_encoder": "video_vae",
    "audio_vae_encoder": "audio_vae",
    "text_encoder_post_modules": "connectors",
}


class ConversionError(UserError):
    """The command line cannot become a recipe (what and why are in the message)."""


@dataclass
class Recipe:
    values: dict[str, object] = field(default_factory=dict)  # dotted key -> value
    sources: dict[str, str] = field(default_factory=dict)  # dotted key -> the flag(s) it came from
    unconverted: dict[str, str] = field(default_factory=dict)  # flag -> why it has no equivalent

    def set(self, key: str, value, source: str) -> None:
        self.values[key], self.sources[key] = value, source


def commands(text: str) -> list[list[str]]:
    """The ``train.py`` command lines of a shell script (comments and line continuations as the shell reads
    them), each as its flag tokens; text without ``train.py`` is one command line of flags."""
    joined = text.replace("\\\n", " ")
    found = []
    for line in joined.splitlines():
        if line.lstrip().startswith("#"):
            continue
        tokens = shlex.split(line, comments=True)
        script = next((i for i, t in enumerate(tokens) if t.endswith("train.py")), None)
        if script is not None:
            found.append(tokens[script + 1 :])
    if not found:
        tokens = shlex.split(joined, comments=True)
        if any(t.startswith("--") for t in tokens):
            found.append(tokens)
    return found


def parse_flags(tokens: list[str]) -> dict[str, str | bool]:
    flags: dict[str, str | bool] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--"):
            raise ConversionError(f"unexpected argument {token!r} (DiffSynth's train.py takes --flag value pairs)")
        name, _, inline = token[2:].partition("=")
        if inline:
            flags[name], i = inline, i + 1
        elif i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
            flags[name], i = tokens[i + 1], i + 2
        else:
            flags[name], i = True, i + 1
    return flags


def merge_passes(passes: list[dict]) -> tuple[dict, dict | None]:
    """(the training flags, the data-processing pass's flags or None): a split script's two passes, or one."""
    data = [p for p in passes if str(p.get("task", "")).endswith("data_process")]
    train = [p for p in passes if not str(p.get("task", "")).endswith("data_process")]
    if len(train) != 1 or len(data) > 1:
        raise ConversionError(
            f"expected one training command (and at most one --task sft:data_process pass), found "
            f"{len(train)} training and {len(data)} data-processing command(s)"
        )
    return train[0], (data[0] if data else None)


def _configs(flags: dict) -> list:
    """The ModelConfigs a command's ``--model_id_with_origin_paths`` / ``--model_paths`` name (DiffSynth's forms)."""
    from ltx2train.inference.model_configs import ModelConfig

    configs = []
    for item in str(flags.get("model_id_with_origin_paths") or "").split(","):
        if item.strip():
            model_id, _, pattern = item.strip().partition(":")
            configs.append(ModelConfig(model_id=model_id, origin_file_pattern=pattern or None))
    paths = flags.get("model_paths")
    if isinstance(paths, str) and paths.strip():
        listed = json.loads(paths) if paths.strip().startswith("[") else paths.split(",")
        configs += [ModelConfig(path=[str(q) for q in p] if isinstance(p, list) else str(p).strip()) for p in listed]
    if isinstance(flags.get("tokenizer_path"), str):
        configs.append(ModelConfig(path=flags["tokenizer_path"]))
    return configs


def _variant(checkpoint: Path, model_ids: str) -> str:
    """The shipped variant the files are (their headers), else the one the model ids name."""
    from ltx2train.inference.av_pipeline import identify_variant

    try:
        return identify_variant(checkpoint)
    except (FileNotFoundError, ValueError):
        return "ltx2.5" if "2.5" in model_ids else "ltx2.3-22b" if "2.3" in model_ids else "ltx2-19b"


def _models(recipe: Recipe, train: dict, data: dict | None) -> None:
    from ltx2train.inference.model_configs import resolve

    passes = [train] + ([data] if data else [])
    configs = [c for p in passes for c in _configs(p)]
    if not configs:
        raise ConversionError("no --model_id_with_origin_paths or --model_paths: which LTX-2 files does it train?")
    try:
        found = resolve(configs)
    except (FileNotFoundError, ValueError) as exc:
        raise ConversionError(f"the model files: {exc}") from None
    source = "--model_id_with_origin_paths / --model_paths"
    recipe.set("model.checkpoint", str(found["checkpoint"]), source)
    recipe.set("model.text_encoder", str(found["text_encoder"]), source + " (Gemma)")
    recipe.set(
        "model.variant",
        _variant(Path(found["checkpoint"]), " ".join(str(p.get("model_id_with_origin_paths")) for p in passes)),
        source + " (headers)",
    )
    if found["distilled"]:
        recipe.set("model.distilled", True, source + " (transformer_distilled.safetensors)")


def _inputs(recipe: Recipe, flags: dict) -> None:
    """What the clips give besides the video: ``--extra_inputs`` / ``--data_file_keys`` -> strategy and columns."""
    inputs = {k.strip() for key in ("extra_inputs", "data_file_keys") for k in str(flags.get(key) or "").split(",")}
    source = "--extra_inputs / --data_file_keys"
    if "in_context_videos" in inputs:
        recipe.set("strategy.name", "ic_lora", source + " (in_context_videos)")
        recipe.set("data.extras", ["reference"], source + " (in_context_videos: the reference latents)")
        recipe.set("data.reference_video_column", "in_context_videos", source)
    elif "input_image" in inputs:
        recipe.set("strategy.name", "i2av", source + " (input_image: the first frame given)")
    else:
        recipe.set("strategy.name", "t2av" if "input_audio" in inputs else "t2v", source)
    recipe.set("data.with_audio", "input_audio" in inputs, source + " (input_audio: the clip's audio file)")
    if "input_audio" not in inputs and recipe.values["strategy.name"] in ("i2av", "ic_lora"):
        recipe.set("strategy.audio", "none", source + " (no input_audio: video only)")
    if "input_audio" in inputs:
        recipe.set("data.audio_column", "input_audio", source)


def _method(recipe: Recipe, flags: dict) -> None:
    base, trainable = flags.get("lora_base_model"), flags.get("trainable_models")
    full = [m.strip() for m in str(trainable or "").split(",") if m.strip()]
    if base:
        if base != "dit":
            recipe.unconverted["lora_base_model"] = f"a LoRA on {base!r}: ltx2train trains LoRAs on the DiT only"
        recipe.set("train.method", "lora", f"--lora_base_model {base}")
        recipe.set("lora.alpha", None, "DiffSynth's LoRA scale: alpha = --lora_rank")
        targets = [t.strip() for t in str(flags.get("lora_target_modules") or "").split(",") if t.strip()]
        if targets:
            recipe.set("lora.target_modules", targets, "--lora_target_modules")
        if full:
            recipe.unconverted["trainable_models"] = (
                f"{', '.join(full)} fully trained beside a LoRA: one method trains every part here "
                "(train.trainable=[transformer, connectors] puts the LoRA on the text connectors too)"
            )
    elif full:
        recipe.set("train.method", "full", f"--trainable_models {trainable}")
        _trainable(recipe, full, trainable)
    if flags.get("preset_lora_path"):
        presets = [str(Path(p.strip()).resolve()) for p in str(flags["preset_lora_path"]).split(",") if p.strip()]
        recipe.set("lora.preset", presets, f"--preset_lora_path {flags['preset_lora_path']}")
    trained = recipe.values.get("train.trainable", ["transformer"])
    fp8 = [_FP8[m.strip()] for m in str(flags.get("fp8_models") or "").split(",") if m.strip() in _FP8]
    fp8 = [c for c in fp8 if c not in trained]  # DiffSynth stores only frozen models in FP8
    if fp8:
        recipe.set("memory.fp8_frozen", fp8, f"--fp8_models {flags['fp8_models']}")


def _trainable(recipe: Recipe, models: list[str], flag: str) -> None:
    """``--trainable_models`` of a full fine-tune -> ``train.trainable`` (the DiT, and the text connectors)."""
    why = [
        f"{m}: ltx2train trains the DiT and its text connectors (text_encoder_post_modules) only"
        for m in models
        if m not in _TRAINABLE
    ]
    if "dit" not in models:
        why.append("the DiT is always trained here (train.trainable starts with transformer)")
    if why:
        recipe.unconverted["trainable_models"] = "; ".join(why)
    if "text_encoder_post_modules" in models:
        recipe.set("train.trainable", [_TRAINABLE[m] for m in _TRAINABLE], f"--trainable_models {flag}")


def _value(key: str, raw):
    if key in _INTS:
        return int(float(raw))
    if key in _FLOATS:
        return float(raw)
    return raw


def _direct(recipe: Recipe, flags: dict) -> None:
    for name, raw in flags.items():
        if name in _DIRECT:
            key = _DIRECT[name]
            value = _value(key, raw)
            if key in ("data.metadata", "train.output_dir", "lora.init_from"):
                value = str(Path(value).expanduser().resolve())
            recipe.set(key, value, f"--{name} {raw}")
        elif name in _SWITCHES:
            recipe.set(_SWITCHES[name], True, f"--{name}")
        elif name in _NO_EQUIVALENT:
            recipe.unconverted[name] = _NO_EQUIVALENT[name]
        elif name not in _HANDLED:
            recipe.unconverted[name] = "not a flag of DiffSynth's LTX-2 train.py that ltx2train knows"


def convert(text: str) -> Recipe:
    """A DiffSynth command line (or a script of one or two) -> the recipe's values, sources and what stayed out."""
    passes = [parse_flags(tokens) for tokens in commands(text)]
    if not passes:
        raise ConversionError("no DiffSynth train.py command (no `... train.py --flag value` line, no --flags)")
    train, data = merge_passes(passes)
    recipe = Recipe()
    _models(recipe, train, data)
    dataset = data or train  # the data-processing pass reads the clips; the training pass its cache
    if dataset.get("dataset_base_path"):
        recipe.set("data.root", str(Path(dataset["dataset_base_path"]).resolve()), "--dataset_base_path")
    _direct(
        recipe,
        {
            k: v
            for k, v in dataset.items()
            if k in ("dataset_metadata_path", "height", "width", "num_frames", "max_pixels", "frame_rate")
        },
    )
    _direct(recipe, {k: v for k, v in train.items() if k not in ("dataset_metadata_path",)})
    if "data.metadata" not in recipe.values:
        raise ConversionError("no --dataset_metadata_path (in the data-processing pass of a split script)")
    cache = (
        Path(data["output_path"]).resolve()
        if data and data.get("output_path")
        else Path(recipe.values.get("train.output_dir", "./models")) / "cache"
    )
    recipe.set(
        "data.cache_dir",
        str(cache),
        "--output_path of --task sft:data_process"
        if data
        else "beside --output_path: ltx2train prepare writes the latents there",
    )
    if "data.height" not in recipe.values:
        recipe.set("data.height", None, "no --height / --width: dynamic resolution under --max_pixels")
        recipe.set("data.width", None, "no --height / --width: dynamic resolution under --max_pixels")
    recipe.values.setdefault("train.num_epochs", 1)
    recipe.sources.setdefault("train.num_epochs", "DiffSynth's default --num_epochs 1")
    _inputs(recipe, dataset)
    _method(recipe, train)
    recipe.set("validation.prompts", [], "DiffSynth validates with its own scripts after training")
    return recipe


def render(recipe: Recipe, origin: str) -> str:
    """The recipe as YAML, one comment per field naming its flag, then the flags left out and why."""
    import yaml

    lines = [
        f"# Converted by `ltx2train from-diffsynth` from {origin}.",
        "# Run: ltx2train prepare THIS.yaml && ltx2train train THIS.yaml",
        "",
    ]
    sections: dict[str, list[str]] = {}
    for key, value in recipe.values.items():
        section, _, name = key.partition(".")
        text = yaml.safe_dump({name: value}, default_flow_style=True, width=10_000).strip()[1:-1].strip()
        sections.setdefault(section, []).append(f"  {text}  # {recipe.sources[key]}")
    for section, entries in sections.items():
        lines += [f"{section}:", *entries, ""]
    if recipe.unconverted:
        lines.append("# DiffSynth flags with no equivalent here:")
        lines += [f"#   --{flag}: {why}" for flag, why in recipe.unconverted.items()]
    return "\n".join(lines) + "\n"


def write_recipe(source: str | Path | list[str], output: str | Path) -> tuple[Path, Recipe]:
    """Convert a script file (or a list of flag tokens) and write the recipe atomically; it is loaded back (the
    recipe's own checks) before it is returned."""
    from ltx2train.config import load_config
    from ltx2train.utils.atomic import write_text_atomic

    if isinstance(source, list):
        text, origin = shlex.join(source), "the flags given"
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(
                f"from-diffsynth: {path} does not exist (a DiffSynth training script, or its flags)"
            )
        text, origin = path.read_text(encoding="utf-8"), str(path)
    recipe = convert(text)
    output = Path(output)
    write_text_atomic(output, render(recipe, origin))
    load_config(output)
    return output, recipe
