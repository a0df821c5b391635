"""``ltx2train from-diffsynth``: DiffSynth-Studio's LTX-2 training scripts (the split T2AV LoRA script, its
single-stage form, the IC-LoRA one) become recipes that prepare and train as they are."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from ltx2train import cli
from ltx2train.compat.diffsynth.training import ConversionError, convert

REPACKAGE = "DiffSynth-Studio/LTX-2-Repackage"
GEMMA = "google/gemma-3-12b-it-qat-q4_0-unquantized"


@pytest.fixture
def diffsynth_files(tiny_workspace, tmp_path, monkeypatch):
    """The tiny model where DiffSynth downloads it, and a DiffSynth dataset: ``metadata.csv`` with ``video``,
    ``prompt``, ``input_audio`` (the clip itself) and ``in_context_videos`` columns."""
    base = tmp_path / "models"
    (base / REPACKAGE).mkdir(parents=True)
    for path in (tiny_workspace / "model").glob("*.safetensors"):
        (base / REPACKAGE / path.name).symlink_to(path)
    (base / "google").mkdir()
    (base / GEMMA).symlink_to(tiny_workspace / "model" / "gemma")
    monkeypatch.setenv("DIFFSYNTH_MODEL_BASE_PATH", str(base))
    data = tmp_path / "data" / "example_video_dataset" / "ltx2"
    data.mkdir(parents=True)
    rows = [json.loads(line) for line in (tiny_workspace / "data" / "metadata.jsonl").read_text().splitlines()]
    lines = ["video,prompt,input_audio,in_context_videos"]
    for row in rows:
        clip = tiny_workspace / "data" / row["video"]
        (data / clip.name).symlink_to(clip)
        lines.append(f'{clip.name},"{row["caption"]}",{clip.name},{clip.name}')
    (data.parent / "ltx2_t2av.csv").write_text("\n".join(lines) + "\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _split_script(**extra) -> str:
    flags = " ".join(f"--{k} {v}" for k, v in extra.items())
    common = (
        '--data_file_keys "video,input_audio" --extra_inputs "input_audio" --height 64 --width 64 '
        '--num_frames 9 --learning_rate 2e-4 --num_epochs 2 --remove_prefix_in_ckpt "pipe.dit." '
        '--lora_base_model "dit" --lora_target_modules "to_k,to_q,to_v,to_out.0" --lora_rank 8 '
        "--use_gradient_checkpointing"
    )
    return f"""# Splited Training (DiffSynth's form)
accelerate launch examples/ltx2/model_training/train.py \\
  --dataset_base_path data/example_video_dataset/ltx2 \\
  --dataset_metadata_path data/example_video_dataset/ltx2_t2av.csv \\
  --dataset_repeat 1 \\
  --model_id_with_origin_paths "{REPACKAGE}:text_encoder_post_modules.safetensors,{REPACKAGE}:video_vae_encoder.safetensors,{REPACKAGE}:audio_vae_encoder.safetensors,{GEMMA}:model*.safetensors" \\
  {common} \\
  --output_path "./models/train/LTX2-T2AV_lora-splited-cache" \\
  --task "sft:data_process"

accelerate launch examples/ltx2/model_training/train.py \\
  --dataset_base_path ./models/train/LTX2-T2AV_lora-splited-cache \\
  --dataset_repeat 2 \\
  --model_id_with_origin_paths "{REPACKAGE}:transformer.safetensors" \\
  {common} {flags} \\
  --output_path "./models/train/LTX2-T2AV_lora" \\
  --task "sft:train"
"""


def test_the_split_t2av_lora_script_prepares_and_trains_as_converted(diffsynth_files, capsys):
    root = diffsynth_files
    (root / "lora.sh").write_text(_split_script(find_unused_parameters="", save_steps=3))
    assert cli.main(["from-diffsynth", str(root / "lora.sh"), "--output", str(root / "recipe.yaml")]) == 0
    out = capsys.readouterr().out
    assert "--remove_prefix_in_ckpt: no equivalent" in out and "--find_unused_parameters: no equivalent" in out
    text = (root / "recipe.yaml").read_text()
    assert "# --learning_rate 2e-4" in text and "# --lora_rank 8" in text  # every field names its flag
    recipe = yaml.safe_load(text)
    assert recipe["lora"] == {"rank": 8, "alpha": None, "target_modules": ["to_k", "to_q", "to_v", "to_out.0"]}
    assert recipe["optimizer"]["lr"] == 2e-4 and recipe["train"]["num_epochs"] == 2
    assert recipe["train"]["output_dir"] == str(root / "models/train/LTX2-T2AV_lora")
    assert recipe["data"]["cache_dir"] == str(root / "models/train/LTX2-T2AV_lora-splited-cache")
    assert recipe["data"]["repeats"] == 2 and recipe["strategy"]["name"] == "t2av"
    assert recipe["model"]["variant"] == "tiny" and recipe["train"]["gradient_checkpointing"] is True
    assert cli.main(["prepare", str(root / "recipe.yaml")]) == 0
    assert cli.main(["train", str(root / "recipe.yaml")]) == 0
    # 6 clips x 2 repeats, batch 1: 12 steps an epoch, 2 epochs; checkpoints every --save_steps 3
    checkpoints = sorted((root / "models/train/LTX2-T2AV_lora/checkpoints").glob("step_*"))
    assert checkpoints[-1].name == "step_000024" and (checkpoints[-1] / "lora.safetensors").is_file()


def test_the_single_stage_form_and_the_flags_alone_give_the_same_training(diffsynth_files, capsys):
    single = (
        f"accelerate launch examples/ltx2/model_training/train.py --dataset_base_path data/example_video_dataset/ltx2 "
        f'--dataset_metadata_path data/example_video_dataset/ltx2_t2av.csv --data_file_keys "video,input_audio" '
        f'--extra_inputs "input_audio" --height 64 --width 64 --num_frames 9 --dataset_repeat 2 '
        f'--model_id_with_origin_paths "{REPACKAGE}:transformer.safetensors,{REPACKAGE}:text_encoder_post_modules.safetensors,'
        f'{REPACKAGE}:video_vae_encoder.safetensors,{REPACKAGE}:audio_vae_encoder.safetensors,{GEMMA}:model*.safetensors" '
        f'--learning_rate 2e-4 --num_epochs 2 --output_path "./models/train/LTX2-T2AV_lora" '
        f'--lora_base_model "dit" --lora_target_modules "to_k,to_q,to_v,to_out.0" --lora_rank 8'
    )
    one, split = convert(single), convert(_split_script())
    for key in (
        "lora.rank",
        "lora.target_modules",
        "optimizer.lr",
        "train.num_epochs",
        "train.output_dir",
        "data.metadata",
        "data.repeats",
        "model.checkpoint",
        "model.text_encoder",
        "strategy.name",
    ):
        assert one.values[key] == split.values[key], key
    flags = single.split("train.py ", 1)[1]
    import shlex

    assert cli.main(["from-diffsynth", "--output", "flags.yaml", "--", *shlex.split(flags)]) == 0
    assert yaml.safe_load(Path("flags.yaml").read_text())["lora"]["rank"] == 8


def test_the_ic_lora_script_trains_with_reference_latents(diffsynth_files):
    script = (
        _split_script()
        .replace('--data_file_keys "video,input_audio"', '--data_file_keys "video,input_audio,in_context_videos"')
        .replace('--extra_inputs "input_audio"', '--extra_inputs "input_audio,in_context_videos"')
    )
    script = script.replace("--num_epochs 2", "--num_epochs 1").replace("--dataset_repeat 2", "--dataset_repeat 1")
    Path("ic.sh").write_text(script)
    assert cli.main(["from-diffsynth", "ic.sh", "--output", "ic.yaml"]) == 0
    recipe = yaml.safe_load(Path("ic.yaml").read_text())
    assert recipe["strategy"]["name"] == "ic_lora" and recipe["data"]["extras"] == ["reference"]
    assert cli.main(["prepare", "ic.yaml"]) == 0 and cli.main(["train", "ic.yaml"]) == 0
    assert (Path(recipe["train"]["output_dir"]) / "checkpoints" / "step_000006" / "lora.safetensors").is_file()


def test_what_cannot_convert_says_why(diffsynth_files, tmp_path):
    with pytest.raises(ConversionError, match="no DiffSynth train.py command"):
        convert("echo hello")
    with pytest.raises(ConversionError, match="nothing at .*LTX-2-Repackage/missing.safetensors"):
        convert(
            f'python train.py --model_id_with_origin_paths "{REPACKAGE}:missing.safetensors" '
            "--dataset_metadata_path x.csv"
        )
    recipe = convert(_split_script(preset_lora_path="x.safetensors", frobnicate=1, use_swanlab=""))
    assert recipe.values["lora.preset"] == [str(Path("x.safetensors").resolve())]
    assert "frobnicate" in recipe.unconverted and "SwanLab" in recipe.unconverted["use_swanlab"]


def test_a_full_fine_tune_of_the_dit_and_its_connectors_converts_and_trains(diffsynth_files, tiny_workspace):
    script = _split_script().replace(
        '--lora_base_model "dit" --lora_target_modules "to_k,to_q,to_v,to_out.0" --lora_rank 8',
        '--trainable_models "dit,text_encoder_post_modules,text_encoder"',
    )
    script = script.replace("--num_epochs 2", "--num_epochs 1").replace("--dataset_repeat 2", "--dataset_repeat 1")
    script = script.replace(
        f'"{REPACKAGE}:transformer.safetensors"',  # the training pass loads what it trains
        f'"{REPACKAGE}:transformer.safetensors,{REPACKAGE}:text_encoder_post_modules.safetensors"',
    )
    Path("full.sh").write_text(script)
    recipe = convert(script)
    assert recipe.values["train.method"] == "full"
    assert recipe.values["train.trainable"] == ["transformer", "connectors"]
    assert "text_encoder: ltx2train trains the DiT" in recipe.unconverted["trainable_models"]
    assert cli.main(["from-diffsynth", "full.sh", "--output", "full.yaml"]) == 0
    assert "# --trainable_models" in Path("full.yaml").read_text()
    assert cli.main(["prepare", "full.yaml"]) == 0 and cli.main(["train", "full.yaml"]) == 0
    out = Path(yaml.safe_load(Path("full.yaml").read_text())["train"]["output_dir"]) / "checkpoints" / "step_000006"
    trained = load_file(str(out / "text_encoder_post_modules.safetensors"))
    base = load_file(str(tiny_workspace / "model" / "text_encoder_post_modules.safetensors"))
    assert trained.keys() == base.keys() and any(
        not torch.equal(trained[k], base[k].to(trained[k].dtype)) for k in base
    )
    # a LoRA cannot go on the DiT while the connectors are fully trained: one method trains every part here
    mixed = convert(_split_script(trainable_models="text_encoder_post_modules"))
    assert mixed.values["train.method"] == "lora" and "train.trainable" not in mixed.values
    assert "one method trains every part" in mixed.unconverted["trainable_models"]
