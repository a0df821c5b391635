"""The config reference page is generated from the schema's docstrings, the one place a field is described: every
field of every section has its doc there, and docs/config-reference.md is what the generator writes now."""

import dataclasses
import subprocess
import sys
from pathlib import Path

from ltx2train.config import reference

PAGE = Path(__file__).resolve().parents[2] / "docs" / "config-reference.md"


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
