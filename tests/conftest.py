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
