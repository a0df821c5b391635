"""The ltx2train command: inspect and the tiny end-to-end run."""

import json
import subprocess
import sys

import av

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
    for component in ("[transformer]", "[connectors]", "[video_vae]", "[audio_vae]", "[vocoder]", "[spatial_upsampler]"):
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
