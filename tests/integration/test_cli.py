"""The ltx2train command: inspect and the tiny end-to-end run."""

import json
import subprocess
import sys

import av
import pytest

from conftest import load_reference


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "ltx2train", *args], capture_output=True, text=True, timeout=300)


def test_inspect_variant_json_matches_reference():
    proc = _cli("inspect", "variant", "ltx2-19b", "--json")
    assert proc.returncode == 0, proc.stderr
    shapes = {k: tuple(v) for k, v in json.loads(proc.stdout).items()}
    main, upscaler = load_reference("ltx2-19b")
    assert shapes == {**main, **upscaler}


def test_inspect_variant_text_lists_components():
    proc = _cli("inspect", "variant", "tiny")
    assert proc.returncode == 0, proc.stderr
    for component in (
        "[transformer]",
        "[connectors]",
        "[video_vae]",
        "[audio_vae]",
        "[vocoder]",
        "[spatial_upsampler]",
    ):
        assert component in proc.stdout
    assert "model.diffusion_model.transformer_blocks.1.attn1.to_q.weight  [16, 16]" in proc.stdout


def test_inspect_unknown_variant_is_a_clear_error():
    proc = _cli("inspect", "variant", "ltx9")
    assert proc.returncode == 2 and "unknown variant 'ltx9'" in proc.stderr and "ltx2-19b" in proc.stderr


def test_tiny_writes_reloads_and_samples(tmp_path):
    proc = _cli("tiny", "--output", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "model" / "transformer.safetensors").is_file()
    with av.open(str(tmp_path / "samples" / "tiny.mp4")) as container:
        kinds = {s.type: s.codec_context.name for s in container.streams}
    assert kinds == {"video": "h264", "audio": "aac"}


def test_bad_config_key_fails_before_any_model_loads(tmp_path, monkeypatch, capsys):
    import ltx2train.models.loading as loading
    from ltx2train import cli

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded before the config was validated")

    import ltx2train.training.builder as builder  # binds load_component at import: patched there too, and undone

    monkeypatch.setattr(loading, "load_component", no_loading)
    monkeypatch.setattr(loading, "load_components", no_loading)
    monkeypatch.setattr(builder, "load_component", no_loading)
    for command in ("prepare", "train", "sample"):
        code = cli.main([command, "recipes/t2av_lora.yaml", "train.max_step=3"])
        assert code == 2
        err = capsys.readouterr().err
        assert "train.max_step" in err and "train.max_steps" in err


def test_demo_runs_end_to_end(tmp_path):
    """`ltx2train demo`, shortened: model + clips -> prepare -> train -> checkpoint -> sample mp4 with audio."""
    out = tmp_path / "demo"
    proc = _cli(
        "demo",
        "--output",
        str(out),
        "train.max_steps=6",
        "train.checkpoint_every=3",
        "validation.every=3",
        "train.log_every=3",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "training loss fell from" in proc.stdout and "validation loss (fixed clips, noise and sigmas)" in proc.stdout
    lora = out / "run" / "checkpoints" / "step_000006" / "lora.safetensors"
    assert lora.is_file() and str(lora) in proc.stdout
    samples = sorted((out / "sample").glob("*.mp4"))
    assert samples and str(samples[0]) in proc.stdout
    with av.open(str(samples[0])) as container:
        assert {(s.type, s.codec_context.name) for s in container.streams} == {("video", "h264"), ("audio", "aac")}
        assert container.streams.audio[0].rate == 16000  # the tiny vocoder's output rate
    assert len(list((out / "run" / "samples").glob("step_000003_*.mp4"))) == 2
    assert len(list((out / "run" / "samples").glob("step_000000_*.mp4"))) == 2  # at_start baseline
    assert (out / "run" / "config.yaml").is_file() and (out / "run" / "metrics.jsonl").is_file()


def test_train_without_a_prepared_cache_says_to_run_prepare(tiny_workspace, tmp_path, capsys):
    from conftest import tiny_config
    from ltx2train import cli
    from ltx2train.config import save_config

    empty = tmp_path / "empty_cache"
    empty.mkdir()
    recipe = save_config(
        tiny_config(tiny_workspace, tmp_path / "run", [f"data.cache_dir={empty}"]), tmp_path / "r.yaml"
    )
    assert cli.main(["train", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert f"no cache at {empty}" in err and "run `ltx2train prepare` first" in err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_the_exit_file_carries_the_code_and_the_processes_exit_0_unless_they_crash(tmp_path, monkeypatch, capsys):
    """``LTX2TRAIN_EXIT_FILE`` (set by launch/slurm/train.sbatch, where torchrun would turn every code into 1):
    the global main process writes the code; every process exits 0 for a code the script acts on."""
    import json

    from ltx2train import cli

    exit_file = tmp_path / "exit.json"
    monkeypatch.setenv("LTX2TRAIN_EXIT_FILE", str(exit_file))
    monkeypatch.setenv("RANK", "1")  # another process: exits 0, writes nothing
    assert cli.main(["train", "recipes/t2av_lora.yaml", "train.max_step=3"]) == 0
    assert not exit_file.exists()
    monkeypatch.setenv("RANK", "0")
    assert cli.main(["train", "recipes/t2av_lora.yaml", "train.max_step=3"]) == 0
    from ltx2train.utils.errors import EXIT_CODES

    record = json.loads(exit_file.read_text())
    assert {k: record[k] for k in ("command", "exit_code", "meaning")} == {
        "command": "train",
        "exit_code": 2,
        "meaning": EXIT_CODES[2],
    }
    assert record["error"]["type"] == "ConfigError" and "'train.max_steps'" in record["error"]["message"]
    assert EXIT_CODES[2].startswith("user error")
    assert record["error"]["message"] in capsys.readouterr().err  # the line the user saw
    monkeypatch.delenv("LTX2TRAIN_EXIT_FILE")
    assert cli.main(["prepare", "recipes/t2av_lora.yaml", "--shard", "2/2"]) == 2  # without the file: the code
    assert "--shard '2/2': INDEX must be in 0..COUNT-1" in capsys.readouterr().err


def test_inspect_recipe_shows_config_buckets_tokens_and_memory(tiny_workspace, tmp_path, capsys):
    """``inspect RECIPE``: the resolved config, the cache's clips per bucket and rejects, the tokens one step
    feeds the transformer (64x64x9 at the tiny VAE's 8x32x32: 2x2x2 video tokens), the memory estimate; a
    dataset not prepared yet says how to prepare it."""
    from conftest import tiny_config
    from ltx2train import cli
    from ltx2train.config import save_config

    cfg = tiny_config(tiny_workspace, tmp_path / "run", ["data.batch_size=2", "train.gradient_accumulation_steps=3"])
    recipe = save_config(cfg, tmp_path / "recipe.yaml")
    assert cli.main(["inspect", str(recipe), "--json", "--world-size", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    (dataset,) = report["datasets"]
    assert dataset["prepared"] and dataset["buckets"] == {"64x64x9": 6} and dataset["rejected"] == 0
    tokens = report["tokens"]
    assert tokens["clips_per_step"] == 12 and tokens["buckets"]["64x64x9"]["video"] == 8
    assert tokens["buckets"]["64x64x9"]["video_per_step"] == 96
    assert report["memory"]["total_bytes"] > 0 and report["config"]["data"]["batch_size"] == 2
    # 6 clips, batch 2 on 2 processes: 1 batch per process an epoch, under 3 micro-batches a step: floored to 1
    assert report["schedule"]["steps_per_epoch"] == 1 and report["schedule"]["steps"] == cfg.train.max_steps
    epochs = ["train.num_epochs=4", "data.batch_size=1", "train.gradient_accumulation_steps=1"]
    assert cli.main(["inspect", str(recipe), *epochs, "--json"]) == 0
    schedule = json.loads(capsys.readouterr().out)["schedule"]
    assert schedule["steps_per_epoch"] == 6 and schedule["steps"] == 24
    assert cli.main(["inspect", str(recipe), f"data.cache_dir={tmp_path / 'none'}"]) == 0
    text = capsys.readouterr().out
    assert "not prepared (run `ltx2train prepare" in text and "resolved config:" in text and "memory:" in text
    assert cli.main(["inspect", str(recipe), "train.max_stpes=3"]) == 2  # a wrong key: the usual error
    assert "did you mean 'train.max_steps'" in capsys.readouterr().err


def test_user_errors_name_key_value_and_choices_without_a_traceback_unless_debug(capsys, tmp_path, monkeypatch):
    import json

    from ltx2train import cli

    exit_file = tmp_path / "exit.json"
    monkeypatch.setenv(cli.EXIT_FILE_VARIABLE, str(exit_file))

    def error(argv: list[str]) -> tuple[dict, str]:
        """The exit file's error record and stderr of a run that must end in a user error."""
        assert cli.main(argv) == 0  # with the exit file set, the code goes there
        record, err = json.loads(exit_file.read_text()), capsys.readouterr().err
        assert record["exit_code"] == 2 and record["error"]["type"] == "ConfigError", record
        return record["error"], err

    found, err = error(["train", "recipes/t2av_lora.yaml", "train.max_stpes=3"])
    for part in ("'train.max_stpes'", "'train.max_steps'"):  # the key given and the key meant
        assert part in found["message"]
    assert "Traceback" not in err and found["message"] in err
    found, err = error(["train", "recipes/t2av_lora.yaml", "train.method=lorra"])
    for part in ("train.method", "lora | full", "'lorra'", "'lora'"):  # key, choices, value, nearest choice
        assert part in found["message"]
    assert "Traceback" not in err
    monkeypatch.delenv(cli.EXIT_FILE_VARIABLE)
    assert cli.main(["train", "recipes/t2av_lora.yaml", "train.method=lorra", "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "ConfigError" in err
    assert err.rstrip().endswith("did you mean 'lora'?")  # the message still closes the output


def test_a_bug_is_not_dressed_as_a_user_error(monkeypatch, tmp_path, capsys):
    """A plain ValueError from inside ltx2train is a bug: its traceback, the line asking to report it, exit code 1
    in the exit file -- never the one-line "error:" of a user's mistake (exit 2)."""
    import json

    from ltx2train import cli, config

    def broken(*args, **kwargs):
        raise ValueError("an internal invariant broke")

    monkeypatch.setattr(config, "load_config", broken)
    monkeypatch.setenv(cli.EXIT_FILE_VARIABLE, str(tmp_path / "exit.json"))
    assert cli.main(["inspect", "memory", "recipes/demo.yaml"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "ValueError: an internal invariant broke" in err
    assert err.rstrip().endswith(cli.REPORT) and err.count("Traceback") == 1
    assert "ltx2train: error:" not in err
    record = json.loads((tmp_path / "exit.json").read_text())
    assert record["exit_code"] == 1 and record["error"] == {
        "type": "ValueError",
        "message": "an internal invariant broke",
    }


def test_a_closed_pipe_ends_the_output_quietly():
    """``ltx2train inspect variant ltx2-19b | head -1``: the reader leaves early; no traceback, no bug report."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "ltx2train", "inspect", "variant", "ltx2-19b"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().startswith("variant ltx2-19b")
    proc.stdout.close()  # ~320 KB are still to come, more than a pipe holds: a later write meets the closed pipe
    assert proc.wait(timeout=120) == 0 and proc.stderr.read() == ""


def test_missing_model_files_are_all_listed_where_they_were_expected(tiny_workspace, tmp_path, capsys):
    from conftest import tiny_config
    from ltx2train import cli
    from ltx2train.config import save_config

    empty = tmp_path / "model"
    empty.mkdir()
    (empty / "transformer.safetensors").write_bytes(b"")  # present: not listed
    recipe = save_config(
        tiny_config(tiny_workspace, tmp_path / "run", [f"model.checkpoint={empty}", f"model.text_encoder={empty}"]),
        tmp_path / "r.yaml",
    )
    assert cli.main(["sample", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "6 model file(s) missing" in err and "Traceback" not in err  # Gemma's *.safetensors: the one present
    for line in (
        "connectors: {}/text_encoder_post_modules.safetensors",
        "video_vae: {}/video_vae_decoder.safetensors",
        "audio_vae: {}/audio_vae_decoder.safetensors",
        "vocoder: {}/audio_vocoder.safetensors",
        "text encoder (Gemma 3): {}/config.json",
    ):
        assert line.format(empty) in err
    assert "transformer:" not in err and "_encoder.safetensors" not in err  # sampling text needs no VAE encoder
    # prepare (into an empty cache): its own files (the VAE encoders, no decoder, no transformer, no vocoder)
    assert cli.main(["prepare", str(recipe), f"data.cache_dir={tmp_path / 'cache'}"]) == 2
    err = capsys.readouterr().err
    assert "connectors:" in err and "vocoder:" not in err and "text encoder (Gemma 3)" in err
    assert "video_vae_encoder.safetensors" in err and "_decoder.safetensors" not in err


def _train_recipe(tiny_workspace, tmp_path, steps=2):
    from conftest import LORA_TRAIN, tiny_config
    from ltx2train.config import save_config

    cfg = tiny_config(
        tiny_workspace, tmp_path / "run", [*LORA_TRAIN, f"train.max_steps={steps}", "train.checkpoint_every=0"]
    )
    return save_config(cfg, tmp_path / "r.yaml")


def test_train_prints_a_line_every_log_every_steps_to_a_log_and_nothing_under_quiet(tiny_workspace, tmp_path, capsys):
    from ltx2train import cli

    recipe = _train_recipe(tiny_workspace, tmp_path)
    assert cli.main(["train", str(recipe)]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in lines] == ["1/2", "2/2"]  # train.log_every=1
    assert all("loss" in line and "steps/s" in line and "samples/s" in line and "ETA" in line for line in lines)
    assert cli.main(["train", str(_train_recipe(tiny_workspace, tmp_path / "q")), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == [line for line in out.splitlines() if line.startswith("trained to step 2")]


def test_train_on_a_terminal_shows_a_bar_with_step_loss_rate_and_eta(tiny_workspace, tmp_path):
    import os
    import pty
    import threading

    recipe = _train_recipe(tiny_workspace, tmp_path, steps=3)
    master, slave = pty.openpty()
    chunks = []
    reader = threading.Thread(target=lambda: _drain(master, chunks), daemon=True)
    reader.start()
    proc = subprocess.run(
        [sys.executable, "-m", "ltx2train", "train", str(recipe)],
        stdout=subprocess.PIPE,
        stderr=slave,
        text=True,
        timeout=300,
    )
    os.close(slave)
    reader.join(timeout=10)
    bar = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, bar
    assert "train: 100%" in bar and "3/3" in bar and "loss=" in bar and ("step/s" in bar or "s/step" in bar)
    assert "<00:00" in bar  # tqdm's ETA
    assert not [line for line in proc.stdout.splitlines() if line.startswith("step ")]  # the bar replaces the lines


def _drain(fd, chunks):
    import os

    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:
            return
        if not data:
            return
        chunks.append(data)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("demo_strategies")  # model and clips made once, each strategy reuses them


@pytest.mark.parametrize("strategy", ["i2av", "ic_lora", "a2v", "v2a", "t2v"])
def test_the_demo_runs_every_strategy(demo_dir, strategy):
    """``ltx2train demo strategy.name=X``: the demo makes what the strategy's validation needs (a first frame, a
    reference video and each clip's reference, a given audio or video) and runs it through to a sample."""
    from ltx2train.demo import run_demo

    result = run_demo(
        demo_dir,
        [
            f"strategy.name={strategy}",
            "train.max_steps=2",
            "validation.at_start=false",
            "validation.every=0",
            "validation.steps=2",
            "train.checkpoint_every=2",
        ],
        log=lambda _: None,
    )
    assert result["result"].step == 2 and result["samples"] and all(p.is_file() for p in result["samples"])
    assert len(result["validation"]) == 2  # one clip per validation prompt, with the strategy's condition


def test_overrides_may_follow_a_flag(capsys):
    """``train R --quiet key=value``: argparse alone would end the overrides at the flag and refuse the rest."""
    from ltx2train.cli.parser import parse_arguments

    args = parse_arguments(["train", "r.yaml", "train.max_steps=3", "--quiet", "lora.rank=8"])
    assert args.recipe == "r.yaml" and args.quiet and args.overrides == ["train.max_steps=3", "lora.rank=8"]
    assert parse_arguments(["inspect", "r.yaml", "--json", "data.fps=24"]).overrides == ["data.fps=24"]
    for argv in (
        ["train", "r.yaml", "--bogus"],
        ["train", "r.yaml", "--quiet", "stray"],
        ["tiny", "--output", "d", "a=b"],
    ):
        with pytest.raises(SystemExit) as exit:
            parse_arguments(argv)
        assert exit.value.code == 2
        assert "unrecognized arguments" in capsys.readouterr().err
