import json
import sys
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).resolve().parent
DATA = TESTS / "data"
REFERENCE = DATA / "reference"  # copy of ../shared/reference (see its README)
FOLDERS = ("unit", "integration", "parity", "distributed")  # the kinds of test: docs/development.md

# Test modules import helpers from one another by basename across folders (test_versions runs test_backends'
# launcher, test_support_matrix checks the tests it names in every folder): each folder is importable whatever
# subset runs. Basenames are unique across the folders (there are no __init__.py files).
sys.path.extend(str(TESTS / folder) for folder in FOLDERS if str(TESTS / folder) not in sys.path)


@pytest.hookimpl(tryfirst=True)  # before -m selects
def pytest_collection_modifyitems(config, items):
    """Every test in tests/distributed is marked ``distributed`` and every one in tests/parity ``parity``, so that
    ``-m "not distributed"`` leaves out everything that launches processes (the few elsewhere carry the mark)."""
    for item in items:
        folder = Path(item.path).resolve().parent
        if folder.parent == TESTS and folder.name in ("distributed", "parity"):
            item.add_marker(folder.name)


VARIANT_REFERENCE = {
    # variant -> (file, tag of the main checkpoint, tag of the x2 upscaler)
    "ltx2-19b": ("ltx2_19b_original_keys.json", "ltx2-19b", "ltx2-spatial-upscaler-x2-1.0"),
    "ltx2.3-22b": ("ltx23_22b_original_keys.json", "ltx2.3-22b", "ltx2.3-spatial-upscaler-x2-1.0"),
    "ltx2.5": ("ltx25_22b_original_keys.json", "ltx2.5-22b", "ltx2.5-spatial-upscaler-x2-1.0"),  # see its README
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


def make_workspace(root: Path, variant: str) -> Path:
    """The demo's inputs for ``variant``: the tiny model + Gemma on disk, 6 synthetic clips, their prepared cache.
    ``tiny_config`` on the workspace trains that variant."""
    from ltx2train.data.prepare import prepare
    from ltx2train.data.synthetic import make_synthetic_dataset
    from ltx2train.models.tiny import write_tiny_checkpoint

    write_tiny_checkpoint(root / "model", variant=variant)
    (root / "VARIANT").write_text(variant)
    make_synthetic_dataset(root / "data", num_clips=6, num_frames=9, fps=24.0, height=64, width=64)
    cfg = tiny_config(root, root / "unused_run")
    report = prepare(cfg)
    assert len(report.encoded) == 6 and not report.rejected
    return root


@pytest.fixture(scope="session")
def tiny_workspace(tmp_path_factory):
    """The tiny LTX-2 (2.0) workspace, made once."""
    return make_workspace(tmp_path_factory.mktemp("tiny_workspace"), "tiny")


@pytest.fixture(scope="session")
def tiny23_workspace(tmp_path_factory):
    """The tiny LTX-2.3 workspace (gated attention, prompt AdaLN, per-modality text projections, BWE vocoder)."""
    return make_workspace(tmp_path_factory.mktemp("tiny23_workspace"), "tiny-2.3")


@pytest.fixture(scope="session")
def tiny25_workspace(tmp_path_factory):
    """The tiny LTX-2.5 workspace (2.3 without video feed-forward biases, keyframe embedding, tiny Gemma 4)."""
    return make_workspace(tmp_path_factory.mktemp("tiny25_workspace"), "tiny-2.5")


def tiny_config(root, output_dir, overrides=()):
    """The demo recipe on a workspace (its variant), writing to ``output_dir``."""
    from ltx2train.demo import demo_config

    marker = Path(root) / "VARIANT"
    variant = marker.read_text() if marker.is_file() else None
    cfg = demo_config(Path(root), [f"train.output_dir={output_dir}", *overrides], variant)
    return cfg


LORA_RANK, LORA_ALPHA = 4, 12.0  # scale 3: a consumer that dropped or double-applied alpha is off by 3x
LORA_TRAIN = [
    "validation.at_start=false",
    "validation.every=0",
    "validation.prompts=[]",
    "validation.loss_sigmas=[]",
    f"lora.rank={LORA_RANK}",
    f"lora.alpha={LORA_ALPHA}",
    "train.log_every=1",
    "optimizer.lr=1e-2",
    "lora.target_modules=[to_q,to_k,to_v,to_out.0,ff.net.0.proj]",
]


def train_lora(workspace, out, extra=()) -> tuple:
    """A tiny LoRA trained 6 steps with alpha != rank (checkpoints at 3 and 6): (config, last checkpoint)."""
    from ltx2train.training.trainer import Trainer

    cfg = tiny_config(
        workspace, out, [*LORA_TRAIN, "train.max_steps=6", "train.checkpoint_every=3", "train.keep_last=5", *extra]
    )
    return cfg, Trainer(cfg, log=lambda _: None).train().checkpoint


@pytest.fixture(scope="session")
def trained_lora(tiny_workspace, tmp_path_factory):
    return train_lora(tiny_workspace, tmp_path_factory.mktemp("lora_run"))


@pytest.fixture(scope="session")
def trained_lora23(tiny23_workspace, tmp_path_factory):
    """``trained_lora`` on the tiny LTX-2.3."""
    return train_lora(tiny23_workspace, tmp_path_factory.mktemp("lora23_run"))


def transformer_inputs(root, tmp_path, seed=0) -> dict:
    """Fixed transformer inputs (one cached clip, fixed noise and sigma) for comparing model outputs."""
    from ltx2train.data.cache import CachedDataset
    from ltx2train.models.loading import load_component
    from ltx2train.models.text_encoder import ProjectedText, connect_text
    from ltx2train.training.strategies import build_strategy

    cfg = tiny_config(root, tmp_path / "unused")
    connectors = load_component(cfg.model.variant, "connectors", cfg.model.checkpoint)
    dataset = CachedDataset(cfg.data.cache_dir)
    batch = dataset.collate([dataset[0]])
    with torch.no_grad():
        projected = ProjectedText(batch["text_video"], batch.get("text_audio"), batch["text_attention_mask"])
        context = connect_text(connectors, projected)
    strategy = build_strategy(cfg)
    return strategy.inputs(batch, context, generator=torch.Generator().manual_seed(seed)).model_kwargs


@torch.no_grad()
def transformer_outputs(transformer, kwargs, **extra):
    """(video, audio) predictions in eval mode."""
    transformer.eval()
    return transformer(**{**kwargs, **extra})


def read_trained_state(checkpoint) -> dict:
    """The exact trained tensors of a checkpoint (its ``state/model`` DCP directory), by state-dict name."""
    import tempfile

    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    with tempfile.TemporaryDirectory() as tmp:
        dcp_to_torch_save(str(Path(checkpoint) / "state" / "model"), f"{tmp}/state.pt")
        return torch.load(f"{tmp}/state.pt", weights_only=True)["model"]


def write_vfr_clip(path, times):
    """An h264 clip whose frame k starts at ``times[k]`` seconds (millisecond timestamps) and is grey 10 + 8k:
    a variable-frame-rate file, as phones write them."""
    from fractions import Fraction

    import av
    import numpy as np

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        for k, t in enumerate(times):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 10 + 8 * k, np.uint8), format="rgb24")
            frame.pts, frame.time_base = round(t * 1000), Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
