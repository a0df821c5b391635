"""The config reference page, generated from the schema: each section's docstring is the single source of its field
docs (``Fields:`` blocks in ``schema.py``). ``python -m ltx2train.config.reference > docs/config-reference.md``
writes the page; ``tests/unit/test_config_reference.py`` fails when the page is stale or a field has no doc.

Only the standard library and the schema are imported (no torch).
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys

from omegaconf import MISSING

from ltx2train.config.schema import Config, DataConfig, DatasetSource

_ENTRY = re.compile(r"^ {4}(\w+): (.*)$")  # a field's first line in a ``Fields:`` block (docstring dedented)
_MORE = re.compile(r"^ {8}(.*)$")  # its continuation lines


def field_docs(cls) -> dict[str, str]:
    """``{field: its doc}`` from the ``Fields:`` block of ``cls``'s docstring (continuation lines joined)."""
    docs: dict[str, str] = {}
    lines = inspect.cleandoc(cls.__doc__ or "").splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == "Fields:"), len(lines))
    current = None
    for line in lines[start + 1 :]:
        entry, more = _ENTRY.match(line), _MORE.match(line)
        if entry:
            current = entry.group(1)
            docs[current] = entry.group(2).strip()
        elif more and current:
            docs[current] += " " + more.group(1).strip()
        elif line.strip():
            current = None
    return docs


def missing_docs(cls) -> list[str]:
    """The fields of ``cls`` its docstring does not document, and docs of fields it does not have."""
    docs, fields = field_docs(cls), {f.name for f in dataclasses.fields(cls)}
    return [f"{f} (no doc)" for f in sorted(fields - docs.keys())] + [
        f"{f} (doc of no field)" for f in sorted(docs.keys() - fields)
    ]


def summary(cls) -> str:
    """The docstring's text before its ``Fields:`` block, as one paragraph per blank-line-separated block."""
    text = inspect.cleandoc(cls.__doc__ or "").split("Fields:")[0].strip()
    return "\n\n".join(" ".join(block.split()) for block in text.split("\n\n"))


def default_of(f: dataclasses.Field) -> str:
    if f.default is MISSING or (f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING):
        return "required"
    value = f.default_factory() if f.default is dataclasses.MISSING else f.default
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value!r}`" if isinstance(value, str) else f"`{value}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def sections() -> list[tuple[str, type]]:
    """``(section name, its dataclass)`` in the order of :class:`Config`."""
    return [(f.name, f.default_factory().__class__) for f in dataclasses.fields(Config)]


def render() -> str:
    """The whole reference page (markdown)."""
    out = [
        "# Config reference",
        "",
        "Generated from the schema (`ltx2train/config/schema.py`): `python -m ltx2train.config.reference > "
        "docs/config-reference.md`. A recipe sets any of these under its section; `section.field=value` on the "
        "command line overrides it.",
        "",
    ]
    for name, cls in sections():
        out += [f"## `{name}`", "", summary(cls), "", *_table(cls)]
        if cls is DataConfig:
            out += ["### `data.datasets` entries", "", summary(DatasetSource), "", *_table(DatasetSource)]
    return "\n".join(out)


def _table(cls) -> list[str]:
    rows = ["| field | type | default | meaning |", "|---|---|---|---|"]
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        kind = str(f.type)
        optional = kind.startswith("Optional[")
        kind = kind[len("Optional[") : -1] + " or null" if optional else kind
        rows.append(f"| `{f.name}` | {_cell(kind)} | {_cell(default_of(f))} | {_cell(docs.get(f.name, ''))} |")
    return [*rows, ""]


def undocumented() -> list[str]:
    """:func:`missing_docs` of every section (dotted keys)."""
    return [
        f"{name}.{problem}"
        for name, cls in [*sections(), ("data.datasets[]", DatasetSource)]
        for problem in missing_docs(cls)
    ]


if __name__ == "__main__":
    sys.stdout.write(render())
