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
    DatasetSource,
    LoRAConfig,
    ModelConfig,
    TrainConfig,
    ValidationConfig,
    config_to_dict,
    dataset_sources,
    load_config,
    save_config,
)

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
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
    assert (
        isinstance(cfg.train.max_steps, int) and cfg.train.max_steps > 0 and cfg.train.gradient_checkpointing is False
    )
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
        ("train.trainable=[transformer,vae]", "train.trainable: ['vae'] unknown; the trainable components are"),
        ("train.trainable=[transformer,connectors,transformer]", "names a component twice"),
        ("train.trainable=[connectors]", "must contain transformer"),
    ],
)
def test_invalid_values(override, message):
    with pytest.raises(ConfigError, match=message.replace("+", r"\+").replace("|", r"\|").replace("[", r"\[")):
        load_config(DEMO, [override])


def test_trained_connectors_are_not_also_frozen_in_fp8():
    assert load_config(DEMO, ["train.trainable=[transformer,connectors]"]).train.trainable == [
        "transformer",
        "connectors",
    ]
    with pytest.raises(ConfigError, match="train.trainable has connectors and memory.fp8_frozen has them too"):
        load_config(DEMO, ["train.trainable=[transformer,connectors]", "memory.fp8_frozen=[connectors]"])


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
        sub, MINIMAL.replace("/m/ckpt", "./weights").replace("/d/cache", "../cache").replace("/o/run", "outputs/run")
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
    for mode in ("t2av", "t2v", "i2av", "ic"):  # each mode's recipe: its strategy, the cache extras it needs
        cfg = load_config(RECIPES / f"{mode}_lora.yaml")
        assert cfg.strategy.name == {"ic": "ic_lora"}.get(mode, mode) and cfg.train.method == "lora"
    assert "first_frame" in load_config(RECIPES / "i2av_lora.yaml").data.extras
    ic = load_config(RECIPES / "ic_lora.yaml")
    assert "reference" in ic.data.extras and len(ic.validation.reference_videos) == len(ic.validation.prompts)
    for name in ("t2av_lora", "t2av_full", "i2av_lora", "ic_lora"):  # the LTX-2.3 twins: the same but the model
        ours, theirs = load_config(RECIPES / f"ltx2.3_{name}.yaml"), load_config(RECIPES / f"{name}.yaml")
        assert (ours.model.variant, theirs.model.variant) == ("ltx2.3-22b", "ltx2-19b")
        assert (ours.strategy, ours.train.method, ours.data.extras) == (
            theirs.strategy,
            theirs.train.method,
            theirs.data.extras,
        )


def test_backend_options_belong_to_their_backend():
    for overrides, message in (
        (["distributed.cpu_offload=true"], "cpu_offload is the fsdp2 backend's"),
        (["distributed.offload_optimizer=true"], "deepspeed backend's"),
        (["distributed.backend=deepspeed", "distributed.offload_params=true"], "zero_stage 3 only"),
        (["distributed.backend=fsdp2", "train.mixed_precision=fp16"], "fp16 needs loss scaling"),
        (["distributed.backend=fsdp3"], "distributed.backend"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_config(T2AV, overrides)


@pytest.mark.parametrize("name", ["t2av_lora.yaml", "ltx2.3_t2av_lora.yaml"])
def test_the_reference_recipe_documents_every_field(name):
    """recipes/t2av_lora.yaml (and its LTX-2.3 twin) is the commented reference: every schema key appears in it,
    nothing else."""
    import yaml

    from ltx2train.config.fields import LEAVES

    def leaves(data, prefix=""):
        for key, value in data.items():
            yield from leaves(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}"]

    text = (RECIPES / name).read_text()
    assert sorted(leaves(yaml.safe_load(text))) == sorted(LEAVES)
    assert load_config(RECIPES / name).data.crop == "center"
    # data.datasets is [] there; the commented example just above it shows an entry with every DatasetSource field
    lines = text.splitlines()
    end = lines.index("  datasets: []")
    start = lines.index("  # datasets:", 0, end)
    example = yaml.safe_load("\n".join(line.replace("  # ", "", 1) for line in lines[start:end]))
    assert [list(entry) for entry in example["datasets"]] == [[f.name for f in dataclasses.fields(DatasetSource)]]


# --------------------------------------------------------------------------------------------------
# Several datasets: data.datasets, data.repeats, data.weight
# --------------------------------------------------------------------------------------------------

DATASETS = """\
  repeats: 2
  datasets:
    - metadata: ./b.csv
      cache_dir: ../b_cache
      root: clips
      repeats: 3
    - {metadata: ~/c.jsonl, cache_dir: "${train.output_dir}/c_cache", root: /abs/c_root}
"""


def test_datasets_from_yaml_resolve_paths(tmp_path, monkeypatch):
    sub = tmp_path / "recipes"
    sub.mkdir()
    path = _recipe(sub, MINIMAL.replace("  cache_dir: /d/cache\n", "  cache_dir: /d/cache\n" + DATASETS))
    monkeypatch.chdir(tmp_path)
    data = load_config(path).data
    assert [type(s) for s in data.datasets] == [DatasetSource, DatasetSource] and data.repeats == 2
    b, c = data.datasets
    assert b == DatasetSource(
        metadata=str(sub / "b.csv"),
        cache_dir=str(tmp_path / "b_cache"),  # ./ ../: recipe dir
        root=str(tmp_path / "clips"),
        repeats=3,
    )  # bare relative: cwd
    assert (c.metadata, c.cache_dir, c.root) == (os.path.expanduser("~/c.jsonl"), "/o/run/c_cache", "/abs/c_root")
    assert (c.repeats, c.weight) == (1, None)


def test_datasets_from_override(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(
        T2AV,
        [
            "data.datasets=[{metadata: ./a.csv, cache_dir: c, weight: 2}, {metadata: b, cache_dir: d, weight: 0.5}]",
            "data.weight=1",
        ],
    )
    a, b = cfg.data.datasets
    assert (a.metadata, a.cache_dir, a.root, a.weight) == (str(tmp_path / "a.csv"), str(tmp_path / "c"), None, 2.0)
    assert (b.metadata, b.weight, cfg.data.weight) == (str(tmp_path / "b"), 0.5, 1.0)  # overrides: cwd
    cleared = load_config(T2AV, ["data.datasets=[{metadata: a.csv, cache_dir: c}]", "data.datasets=[]"])
    assert cleared.data.datasets == []  # later overrides win
    default = load_config(T2AV).data
    assert (default.datasets, default.repeats, default.weight) == ([], 1, None)


def test_datasets_save_round_trip(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(
        T2AV,
        [
            "data.datasets=[{metadata: a.csv, cache_dir: c, root: r, repeats: 4}, {metadata: b.csv, cache_dir: d}]",
            "data.repeats=2",
        ],
    )
    again = load_config(save_config(cfg, tmp_path / "run" / "config.yaml"))
    assert again == cfg and again.data.datasets[0].root == str(tmp_path / "r")
    assert config_to_dict(again)["data"]["datasets"][1] == dict(
        metadata=str(tmp_path / "b.csv"), cache_dir=str(tmp_path / "d"), root=None, repeats=1, weight=None
    )


@pytest.mark.parametrize(
    "datasets, message",
    [
        (
            "[a.csv]",
            r"data.datasets\[0\]: expected a mapping of DatasetSource fields \(metadata, cache_dir, root, "
            r"repeats, weight\), got 'a.csv'",
        ),
        (
            "[{metadata: a, cache_dir: c}, {metadata: b, cache: d}]",
            r"data.datasets\[1\].cache: unknown key — did you mean 'cache_dir'\?",
        ),
        (
            "[{metadata: a, cache_dir: c, colour: red}]",
            r"data.datasets\[0\].colour: unknown key \(valid keys of DatasetSource: metadata, cache_dir, root",
        ),
        ("[{metadata: a}]", r"data.datasets\[0\].cache_dir is required"),
        (
            "[{cache_dir: c}, {metadata: b}]",
            r"data.datasets\[0\].metadata is required\n.*data.datasets\[1\].cache_dir is required",
        ),
        ("[{metadata: a, cache_dir: c, repeats: many}]", r"data.datasets\[0\].repeats: expected int, got 'many'"),
        (
            "[{metadata: a, cache_dir: c, weight: heavy}]",
            r"data.datasets\[0\].weight: expected float or null, got 'heavy'",
        ),
        ("[{metadata: [a, b], cache_dir: c}]", r"data.datasets\[0\].metadata: expected str, got \['a', 'b'\]"),
        (
            "a.csv",
            r"data.datasets: expected list of DatasetSource mappings \(metadata, cache_dir, root, repeats, "
            r"weight\), got 'a.csv'",
        ),
    ],
)
def test_dataset_entry_errors(datasets, message):
    with pytest.raises(ConfigError, match=message):
        load_config(T2AV, [f"data.datasets={datasets}"])


def test_dataset_entry_errors_in_yaml_and_entry_keys(tmp_path):
    entries = "  datasets:\n    - metadata: a\n      cach_dir: c\n    - just a string\n"
    text = MINIMAL.replace("  cache_dir: /d/cache\n", "  cache_dir: /d/cache\n" + entries)
    with pytest.raises(
        ConfigError,
        match=r"2 problems.*\n.*data.datasets\[0\].cach_dir: unknown key — did you mean "
        r"'cache_dir'\?\n.*data.datasets\[1\]: expected a mapping",
    ):
        load_config(_recipe(tmp_path, text))
    with pytest.raises(
        ConfigError,
        match=r"'data.datasets\[0\].weight': the entries of 'data.datasets' are not set "
        r"one by one; give the whole list \(data.datasets=\[\{metadata: ",
    ):
        load_config(T2AV, ["data.datasets[0].weight=2"])
    # an entry's fields follow the loader's own rules: 2.0 is a fine int
    cfg = load_config(T2AV, ["data.datasets=[{metadata: a, cache_dir: c, repeats: 2.0}]"])
    assert cfg.data.datasets[0].repeats == 2 and isinstance(cfg.data.datasets[0].repeats, int)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["data.datasets=[{metadata: a, cache_dir: c, weight: 2}, {metadata: b, cache_dir: d}]"],
            r"either every dataset has a weight or none has; not set: data.weight \(the first dataset's\), "
            r"data.datasets\[1\].weight$",
        ),
        (["data.weight=1", "data.datasets=[{metadata: a, cache_dir: c}]"], r"not set: data.datasets\[0\].weight$"),
        (
            ["data.weight=1", "data.datasets=[{metadata: a, cache_dir: c, weight: 1, repeats: 3}]"],
            r"data.datasets\[0\].repeats=3: use weights or repeats, not both",
        ),
        (["data.weight=1", "data.repeats=2"], r"data.repeats=2: use weights or repeats, not both"),
        (["data.repeats=0"], r"data.repeats: must be >= 1, got 0"),
        (
            ["data.datasets=[{metadata: a, cache_dir: c, repeats: 0}]"],
            r"data.datasets\[0\].repeats: must be >= 1, got 0",
        ),
        (
            ["data.weight=0", "data.datasets=[{metadata: a, cache_dir: c, weight: -1}]"],
            r"data.weight: must be > 0 \(or null\), got 0.0\n"
            r".*data.datasets\[0\].weight: must be > 0 \(or null\), got -1.0",
        ),
    ],
)
def test_dataset_weights_and_repeats(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(T2AV, overrides)


def test_dataset_weights_or_repeats_alone_are_fine():
    weighted = load_config(T2AV, ["data.weight=3", "data.datasets=[{metadata: a, cache_dir: c, weight: 1}]"]).data
    assert [s.weight for s in dataset_sources(weighted)] == [3.0, 1.0]
    repeated = load_config(T2AV, ["data.repeats=2", "data.datasets=[{metadata: a, cache_dir: c, repeats: 5}]"]).data
    assert [s.repeats for s in dataset_sources(repeated)] == [2, 5]


def test_dataset_cache_dirs_distinct(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        ConfigError,
        match=r"data.datasets\[0\].cache_dir: /data/my_clips/cache is also data.cache_dir; "
        "every dataset needs its own cache_dir",
    ):
        load_config(T2AV, ["data.datasets=[{metadata: a, cache_dir: /data/my_clips/cache/}]"])
    with pytest.raises(ConfigError, match=rf"data.datasets\[2\].cache_dir: {tmp_path}/c is also data.datasets\[0\]"):
        load_config(
            T2AV,
            [
                "data.datasets=[{metadata: a, cache_dir: c}, {metadata: b, cache_dir: d}, "
                "{metadata: e, cache_dir: ./x/../c}]"
            ],
        )
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(ConfigError, match=r"data.datasets\[1\].cache_dir: .*/link is also data.datasets\[0\]"):
        load_config(T2AV, ["data.datasets=[{metadata: a, cache_dir: real}, {metadata: b, cache_dir: link}]"])


def test_dataset_sources_first_then_entries():
    datasets = "data.datasets=[{metadata: /b.csv, cache_dir: /b}, {metadata: /c.csv, cache_dir: /c}]"
    data = load_config(T2AV, ["data.repeats=2", "data.root=/data/root", datasets]).data
    first, b, c = dataset_sources(data)
    assert first == DatasetSource(
        metadata="/data/my_clips/metadata.csv",
        cache_dir="/data/my_clips/cache",
        root="/data/root",
        repeats=2,
        weight=None,
    )
    assert (b, c) == tuple(data.datasets) and (b.metadata, c.cache_dir) == ("/b.csv", "/c")
    assert dataset_sources(load_config(T2AV).data) == [
        DatasetSource(metadata="/data/my_clips/metadata.csv", cache_dir="/data/my_clips/cache")
    ]


def test_check_paths_covers_dataset_entries(tmp_path):
    meta = tmp_path / "a.csv"
    meta.write_text("video,caption\n")
    datasets = f"data.datasets=[{{metadata: {meta}, cache_dir: /c1}}, {{metadata: {tmp_path}/b.csv, cache_dir: /c2}}]"
    with pytest.raises(ConfigError, match=rf"data.datasets\[1\].metadata: {tmp_path}/b.csv does not exist"):
        load_config(T2AV, [f"data.metadata={meta}", datasets], check_paths=["data.metadata"])
    cfg = load_config(
        T2AV, [f"data.metadata={meta}", datasets.replace("b.csv", "a.csv")], check_paths=["data.metadata"]
    )
    assert cfg.data.datasets[1].metadata == str(meta)
    with pytest.raises(ConfigError, match="check_paths: data.datasets does not hold a path"):
        load_config(T2AV, [datasets], check_paths=["data.datasets"])


def test_dataset_list_type_name():
    from ltx2train.config.fields import LEAVES, type_name

    fields = "metadata, cache_dir, root, repeats, weight"
    assert type_name(LEAVES["data.datasets"]) == f"list of DatasetSource mappings ({fields})"
    assert type_name(LEAVES["data.weight"]) == "float or null"


def test_diffsynth_spellings_are_understood(tmp_path):
    """``lora.alpha: null`` is alpha = rank (whatever rank an override sets), ``target_modules`` takes DiffSynth's
    comma form, and DiffSynth's flag names point at our keys rather than at the nearest spelling."""
    path = _recipe(tmp_path, MINIMAL)
    cfg = load_config(path, ["lora.alpha=null", "lora.rank=64", "lora.target_modules=to_k,to_q, to_v,to_out.0"])
    assert cfg.lora.alpha == 64.0 and cfg.lora.target_modules == ["to_k", "to_q", "to_v", "to_out.0"]
    assert load_config(path).lora.alpha == 32.0
    for flag, ours in (
        ("train.dataset_repeat", "data.repeats"),
        ("data.frame_rate", "data.fps"),
        ("train.save_steps", "train.checkpoint_every"),
        ("learning_rate", "optimizer.lr"),
        ("train.use_gradient_checkpointing_offload", "memory.activation_offload"),
    ):
        with pytest.raises(ConfigError, match=rf"unknown config key '{flag}' — did you mean '{ours}'\?"):
            load_config(path, [f"{flag}=1"])


def test_the_training_shift_defaults_are_the_schedulers():
    """objective.shift_* default to the constants ``inference/schedules.py`` shifts the sampling schedule with (one
    ``shift_mu`` serves both), so training samples the noise levels inference starts from."""
    from ltx2train.config import ObjectiveConfig
    from ltx2train.inference import schedules

    o = ObjectiveConfig()
    assert (o.shift_base, o.shift_max, o.shift_base_tokens, o.shift_max_tokens) == (
        schedules.BASE_SHIFT,
        schedules.MAX_SHIFT,
        schedules.BASE_TOKENS,
        schedules.MAX_TOKENS,
    )
    assert schedules.shift_mu(o.shift_max_tokens) == o.shift_max


def test_a_rule_across_sections_refuses_the_recipe_for_every_command(capsys):
    """A cross-section rule (here: FP8 storage of the transformer is for the ddp backend) is part of loading the
    recipe, so ``inspect memory`` and ``prepare`` refuse what ``train`` would refuse, before anything heavy."""
    from ltx2train import cli

    bad = ["memory.fp8_frozen=[transformer]", "distributed.backend=fsdp2"]
    with pytest.raises(ConfigError, match="transformer with distributed.backend=fsdp2 is not supported yet"):
        load_config(T2AV, bad)
    for command in (["inspect", "memory", str(T2AV)], ["prepare", str(T2AV)], ["train", str(T2AV)]):
        assert cli.main([*command, *bad]) == 2
        assert "is not supported yet" in capsys.readouterr().err
    assert load_config(T2AV, ["memory.fp8_frozen=[transformer]"]).distributed.backend == "ddp"
