import json
from pathlib import Path

import pytest
import torch

DATA = Path(__file__).parent / "data"
REFERENCE = DATA / "reference"  # copy of ../shared/reference (see its README)

VARIANT_REFERENCE = {
    # variant -> (file, tag of the main checkpoint, tag of the x2 upscaler)
    "ltx2-19b": ("ltx2_19b_original_keys.json", "ltx2-19b", "ltx2-spatial-upscaler-x2-1.0"),
    "ltx2.3-22b": ("ltx23_22b_original_keys.json", "ltx2.3-22b", "ltx2.3-spatial-upscaler-x2-1.0"),
}


def load_reference(variant: str) -> tuple[dict, dict]:
    fname, main_tag, up_tag = VARIANT_REFERENCE[variant]
    data = json.loads((REFERENCE / fname).read_text())
    as_tuples = lambda d: {k: tuple(v) for k, v in d.items()}  # noqa: E731
    return as_tuples(data[main_tag]), as_tuples(data[up_tag])


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def tiny_workspace(tmp_path_factory):
    """The demo's inputs, made once: tiny LTX-2 + Gemma on disk, 6 synthetic clips, their prepared cache."""
    from ltx2train.data.prepare import prepare
    from ltx2train.data.synthetic import make_synthetic_dataset
    from ltx2train.models.tiny import write_tiny_checkpoint

    root = tmp_path_factory.mktemp("tiny_workspace")
    write_tiny_checkpoint(root / "model")
    make_synthetic_dataset(root / "data", num_clips=6, num_frames=9, fps=24.0, height=64, width=64)
    cfg = tiny_config(root, root / "unused_run")
    report = prepare(cfg)
    assert len(report.encoded) == 6 and not report.failed
    return root


def tiny_config(root, output_dir, overrides=()):
    from ltx2train.demo import demo_config

    cfg = demo_config(Path(root), [f"train.output_dir={output_dir}", *overrides])
    return cfg
