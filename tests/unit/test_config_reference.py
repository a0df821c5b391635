"""The config reference page and the commented recipes are generated from the schema's docstrings, the one place a
field is described: every field of every section has its doc there, and docs/config-reference.md and the commented
recipes are what the generator writes now."""

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ltx2train.config import reference

PAGE = Path(__file__).resolve().parents[2] / "docs" / "config-reference.md"
RECIPES = PAGE.parents[1] / "recipes"


def test_every_field_is_documented_in_its_section_docstring():
    assert reference.undocumented() == []


def test_the_page_is_current():
    """Regenerate with ``python -m ltx2train.config.reference > docs/config-reference.md``."""
    written = subprocess.run(
        [sys.executable, "-m", "ltx2train.config.reference"], capture_output=True, text=True, check=True
    ).stdout
    assert written == reference.render()
    assert PAGE.read_text() == written, "docs/config-reference.md is stale: regenerate it (see this test's docstring)"


def test_every_key_is_on_the_page_with_its_default():
    from ltx2train.config import Config

    page = PAGE.read_text()
    for section in dataclasses.fields(Config):
        assert f"## `{section.name}`" in page
        for f in dataclasses.fields(section.default_factory()):
            assert f"| `{f.name}` |" in page, f"{section.name}.{f.name}"
    assert "| `rank` | int | `32` |" in page and "| `checkpoint` | str | required |" in page
    assert "| `alpha` | float or null | `32.0` |" in page


def test_a_field_without_doc_or_a_doc_without_field_is_reported():
    @dataclasses.dataclass
    class Section:
        """A section.

        Fields:
            kept: documented,
                over two lines.
            gone: a doc of no field.
        """

        kept: int = 1
        new: int = 2

    docs = reference.field_docs(Section)
    assert docs == {"kept": "documented, over two lines.", "gone": "a doc of no field."}
    assert reference.missing_docs(Section) == ["new (no doc)", "gone (doc of no field)"]
    assert reference.default_of(dataclasses.fields(Section)[1]) == "`2`"


@pytest.mark.parametrize("name", reference.COMMENTED_RECIPES)
def test_the_commented_recipe_is_current(name):
    """Regenerate with ``python -m ltx2train.config.reference --recipes recipes``: a field's doc changed in the schema
    and not in the recipe fails here."""
    text = (RECIPES / name).read_text()
    assert reference.commented_recipe(text) == text, f"recipes/{name} is stale: regenerate it (see the docstring)"


def test_a_commented_recipe_keeps_its_values_and_shows_every_field_under_its_doc(tmp_path):
    import yaml

    from ltx2train.config import load_config
    from ltx2train.config.fields import LEAVES

    given = (
        "# my recipe\n#   two header lines\n\ntrain:\n  max_steps: 7\n  output_dir: ./run\n"
        "data:\n  cache_dir: ${train.output_dir}/cache\n  metadata: clips.csv\n  frame_buckets: [1, 9]\n"
        "optimizer:\n  lr: 1e-4\nmodel:\n  checkpoint: /models/ltx-2\n  text_encoder: ./gemma\n"
    )
    (tmp_path / "given.yaml").write_text(given)
    written = reference.commented_recipe(given)
    (tmp_path / "written.yaml").write_text(written)
    # the same run: values, interpolations and relative paths as written, the schema's defaults for the rest
    assert load_config(tmp_path / "written.yaml") == load_config(tmp_path / "given.yaml")
    assert written.startswith("# my recipe\n#   two header lines\n\n")
    assert "cache_dir: ${train.output_dir}/cache" in written and "output_dir: ./run" in written

    def leaves(data, prefix=""):
        for key, value in data.items():
            yield from leaves(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}"]

    assert sorted(leaves(yaml.safe_load(written))) == sorted(LEAVES)
    lines = written.splitlines()
    for name, cls in reference.sections():
        for field, doc in reference.field_docs(cls).items():
            start = lines.index(f"{name}:")
            line = next(i for i in range(start, len(lines)) if lines[i].startswith(f"  {field}:"))
            comment = []
            for previous in reversed(lines[start + 1 : line]):
                if not previous.startswith("  # "):
                    break
                comment.insert(0, previous[4:])
            plain = lambda text: re.sub(r":\w+:|`|~", "", text)  # noqa: E731
            assert " ".join(plain(doc).split()[:4]) in plain(" ".join(comment)), (name, field)
    assert reference.commented_recipe(written) == written  # a written recipe is current
