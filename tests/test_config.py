"""Config loading, overrides, validation and saving (fast: no models, no torch needed)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from ltx2train.config import (
    Config,
    ConfigError,
    DataConfig,
    LoRAConfig,
    ModelConfig,
    TrainConfig,
    ValidationConfig,
    config_to_dict,
    load_config,
    save_config,
)

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
DEMO = RECIPES / "demo.yaml"
T2AV = RECIPES / "t2av_lora.yaml"

MINIMAL = """\
model:
  checkpoint: /m/ckpt
  text_encoder: /m/gemma
data:
  metadata: /d/meta.jsonl
  cache_dir: /d/cache
train:
  output_dir: /o/run
"""


def _recipe(tmp_path: Path, text: str = MINIMAL, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_demo_recipe_loads():
    cfg = load_config(DEMO)
    assert isinstance(cfg, Config)
    assert isinstance(cfg.model, ModelConfig) and isinstance(cfg.data, DataConfig)
    assert isinstance(cfg.train, TrainConfig) and isinstance(cfg.validation, ValidationConfig)
    assert cfg.model.variant == "tiny" and cfg.model.dtype == "float32"
    assert (cfg.data.height, cfg.data.width, cfg.data.num_frames) == (64, 64, 9)
    assert isinstance(cfg.data.fps, float) and cfg.data.fps == 24.0
    assert (cfg.data.max_sequence_length, cfg.data.batch_size, cfg.data.num_workers) == (32, 2, 0)
    assert (cfg.lora.rank, cfg.lora.alpha) == (8, 8.0) and isinstance(cfg.lora.alpha, float)
    assert cfg.optimizer.lr == pytest.approx(2e-3) and isinstance(cfg.optimizer.lr, float)
    assert (cfg.optimizer.warmup_steps, cfg.optimizer.scheduler, cfg.optimizer.weight_decay) == (5, "cosine", 0.0)
    assert isinstance(cfg.train.max_steps, int) and cfg.train.max_steps > 0 and cfg.train.gradient_checkpointing is False
    assert cfg.train.mixed_precision == "no"
    assert cfg.validation.prompts == [
        "a red circle moves right with a rising tone",
        "a blue square moves up with a falling tone",
    ]
    assert isinstance(cfg.validation.at_start, bool) and cfg.validation.steps == 4
    assert (cfg.validation.height, cfg.validation.width, cfg.validation.num_frames) == (64, 64, 9)
    assert cfg.validation.guidance_scale == 1.0
    assert cfg.tracker.backend == "none"
    # placeholder paths are cwd-relative and come back absolute
    assert cfg.train.output_dir == os.path.abspath("outputs/demo/run")
    assert cfg.model.text_encoder == os.path.abspath("outputs/demo/model/gemma")


def test_t2av_recipe_loads():
    cfg = load_config(T2AV)
    assert cfg.model.variant == "ltx2-19b" and cfg.model.dtype == "bfloat16"
    assert cfg.model.checkpoint == "/models/ltx-2-19b"
    assert (cfg.data.height, cfg.data.width, cfg.data.num_frames) == (512, 768, 121)
    assert (cfg.lora.rank, cfg.lora.alpha) == (32, 32.0)
    assert cfg.optimizer.lr == pytest.approx(1e-4)
    assert cfg.train.max_steps == 2000 and cfg.train.gradient_checkpointing is True
    assert cfg.train.mixed_precision == "bf16"
    assert len(cfg.validation.prompts) == 2 and cfg.validation.every == 250
    assert cfg.tracker.backend == "wandb" and cfg.tracker.mode == "online"
    assert isinstance(config_to_dict(cfg), dict)
    assert config_to_dict(cfg)["lora"]["target_modules"] == ["to_q", "to_k", "to_v", "to_out.0"]


def test_overrides_nested_value_and_list():
    cfg = load_config(
        DEMO,
        [
            "train.max_steps=10",
            "lora.rank=16",
            "optimizer.lr=1e-5",
            "optimizer.betas=[0.8,0.95]",
            "validation.prompts=[a cat: sleeping,a dog]",
            "validation.negative_prompt=blurry, low quality",
            "tracker.run_name=null",
            "data.with_audio=false",
        ],
    )
    assert cfg.train.max_steps == 10 and cfg.lora.rank == 16
    assert cfg.optimizer.lr == pytest.approx(1e-5)
    assert cfg.optimizer.betas == [0.8, 0.95]
    assert cfg.validation.prompts == ["a cat: sleeping", "a dog"]
    assert cfg.validation.negative_prompt == "blurry, low quality"
    assert cfg.tracker.run_name is None and cfg.data.with_audio is False
    # later overrides win; string fields are literal
    cfg = load_config(DEMO, ["train.max_steps=10", "train.max_steps=12", "train.mixed_precision=no"])
    assert cfg.train.max_steps == 12 and cfg.train.mixed_precision == "no"


def test_unknown_key_in_override_suggests():
    with pytest.raises(ConfigError, match=r"unknown config key 'train.max_step' — did you mean 'train.max_steps'\?"):
        load_config(DEMO, ["train.max_step=10"])
    with pytest.raises(ConfigError, match=r"'trian.seed' — did you mean 'train.seed'\?"):
        load_config(DEMO, ["trian.seed=1"])


def test_unknown_key_in_yaml_suggests(tmp_path):
    path = _recipe(tmp_path, MINIMAL + "lora:\n  rnak: 4\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'lora.rnak' — did you mean 'lora.rank'\?"):
        load_config(path)
    path = _recipe(tmp_path, MINIMAL + "optimiser:\n  lr: 1.0\n", "s.yaml")
    with pytest.raises(ConfigError, match=r"unknown config key 'optimiser' — did you mean 'optimizer'\?"):
        load_config(path)


def test_wrong_type_names_key(tmp_path):
    with pytest.raises(ConfigError, match=r"train.max_steps: expected int, got 'abc'"):
        load_config(DEMO, ["train.max_steps=abc"])
    with pytest.raises(ConfigError, match=r"lora.rank: expected int"):
        load_config(_recipe(tmp_path, MINIMAL + "lora:\n  rank: 4.5\n"))
    with pytest.raises(ConfigError, match=r"validation.prompts: expected list of str"):
        load_config(DEMO, ["validation.prompts=hello"])
    # OmegaConf's own typing, with our message: a list or mapping where a string goes, 0/1 as a boolean
    with pytest.raises(ConfigError, match=r"model.variant: expected str, got \['a', 'b'\]"):
        load_config(_recipe(tmp_path, MINIMAL + "model:\n  variant: [a, b]\n", "list.yaml"))
    with pytest.raises(ConfigError, match=r"train.max_steps: expected int, got \{'a': 1\}"):
        load_config(DEMO, ["train.max_steps={a: 1}"])
    with pytest.raises(ConfigError, match=r"data.shuffle: expected bool, got 1"):
        load_config(DEMO, ["data.shuffle=1"])
    assert load_config(DEMO, ["train.max_steps=3.0"]).train.max_steps == 3


def test_malformed_override():
    with pytest.raises(ConfigError, match="malformed override 'train.max_steps'"):
        load_config(DEMO, ["train.max_steps"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.num_frames=10", "data.num_frames: must be of the form 8k+1"),
        ("validation.num_frames=24", "validation.num_frames: must be of the form 8k+1"),
        ("data.height=65", "data.height: must be a positive multiple of 32, got 65"),
        ("validation.width=100", "validation.width: must be a positive multiple of 32"),
        ("optimizer.scheduler=cosin", "optimizer.scheduler: expected one of constant | linear | cosine"),
        ("train.mixed_precision=fp8", "train.mixed_precision"),
        ("tracker.backend=mlflow", "tracker.backend"),
        ("model.dtype=float64", "model.dtype"),
        ("model.variant=ltx3", "model.variant: unknown variant"),
        ("lora.rank=0", "lora.rank: must be >= 1"),
        ("optimizer.lr=0", "optimizer.lr: must be > 0"),
        ("data.batch_size=0", "data.batch_size: must be >= 1"),
        ("train.max_steps=-1", "train.max_steps: must be >= 1"),
        ("train.keep_last=0", "train.keep_last: must be >= 1"),
        ("train.resume=/no/such/checkpoint", "train.resume: /no/such/checkpoint does not exist"),
    ],
)
def test_invalid_values(override, message):
    with pytest.raises(ConfigError, match=message.replace("+", r"\+").replace("|", r"\|")):
        load_config(DEMO, [override])


def test_resume_keywords_and_existing_path(tmp_path):
    assert load_config(DEMO, ["train.resume=none"]).train.resume == "none"
    ckpt = tmp_path / "checkpoint-20"
    ckpt.mkdir()
    assert load_config(DEMO, [f"train.resume={ckpt}"]).train.resume == str(ckpt)


def test_missing_required(tmp_path):
    path = _recipe(tmp_path, MINIMAL.replace("  checkpoint: /m/ckpt\n", ""))
    with pytest.raises(ConfigError, match="model.checkpoint is required"):
        load_config(path)
    # ... and an override can supply it
    assert load_config(path, ["model.checkpoint=/m/x"]).model.checkpoint == "/m/x"


def test_check_paths(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    missing = tmp_path / "gemma"
    overrides = [f"model.checkpoint={ckpt}", f"model.text_encoder={missing}"]
    assert load_config(DEMO, overrides, check_paths=["model.checkpoint"]).model.checkpoint == str(ckpt)
    with pytest.raises(ConfigError, match=f"model.text_encoder: {missing} does not exist"):
        load_config(DEMO, overrides, check_paths=["model.checkpoint", "model.text_encoder"])


def test_save_config_round_trip(tmp_path):
    for recipe in (DEMO, T2AV):
        cfg = load_config(recipe, ["lora.rank=4", "validation.prompts=[x: y, z]"])
        out = save_config(cfg, tmp_path / "run" / f"{recipe.stem}.yaml")
        assert out.is_file()
        assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]
        again = load_config(out)
        assert again == cfg
        assert config_to_dict(again) == dataclasses.asdict(cfg)


def test_relative_paths(tmp_path, monkeypatch):
    sub = tmp_path / "recipes"
    sub.mkdir()
    path = _recipe(
        sub,
        MINIMAL.replace("/m/ckpt", "./weights").replace("/d/cache", "../cache").replace("/o/run", "outputs/run"),
    )
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(path, ["data.metadata=./meta.jsonl"])
    assert cfg.model.checkpoint == str(sub / "weights")  # ./ in the recipe: recipe dir
    assert cfg.data.cache_dir == str(tmp_path / "cache")  # ../ in the recipe: recipe dir
    assert cfg.train.output_dir == str(elsewhere / "outputs" / "run")  # bare relative: cwd
    assert cfg.data.metadata == str(elsewhere / "meta.jsonl")  # overrides: cwd
    assert cfg.data.root is None


def test_interpolation(tmp_path):
    path = _recipe(tmp_path, MINIMAL.replace("/d/cache", "${train.output_dir}/cache"))
    assert load_config(path).data.cache_dir == "/o/run/cache"


def test_empty_sections_keep_defaults(tmp_path):
    cfg = load_config(_recipe(tmp_path, MINIMAL + "lora:\nobjective: {}\n"))
    assert cfg.lora == LoRAConfig()


def test_config_module_is_light():
    import subprocess
    import sys

    code = "import sys, ltx2train.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_shipped_recipe_loads_and_names_its_method_and_backend():
    for recipe in sorted(RECIPES.glob("*.yaml")):
        cfg = load_config(recipe)
        assert cfg.train.method in ("lora", "full") and cfg.distributed.backend in ("ddp", "fsdp2", "deepspeed"), recipe
    full = load_config(RECIPES / "t2av_full.yaml")
    assert (full.train.method, full.distributed.backend) == ("full", "fsdp2")


def test_backend_options_belong_to_their_backend():
    for overrides, message in ((["distributed.cpu_offload=true"], "cpu_offload is the fsdp2 backend's"),
                               (["distributed.offload_optimizer=true"], "deepspeed backend's"),
                               (["distributed.backend=deepspeed", "distributed.offload_params=true"], "zero_stage 3 only"),
                               (["distributed.backend=fsdp2", "train.mixed_precision=fp16"], "fp16 needs loss scaling"),
                               (["distributed.backend=fsdp3"], "distributed.backend")):
        with pytest.raises(ConfigError, match=message):
            load_config(T2AV, overrides)


def test_the_reference_recipe_documents_every_field():
    """recipes/t2av_lora.yaml is the commented reference: every schema key appears in it, nothing else."""
    import yaml

    from ltx2train.config.keys import LEAVES

    def leaves(data, prefix=""):
        for key, value in data.items():
            yield from leaves(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}"]

    assert sorted(leaves(yaml.safe_load((RECIPES / "t2av_lora.yaml").read_text()))) == sorted(LEAVES)
    assert load_config(RECIPES / "t2av_lora.yaml").data.crop == "center"
