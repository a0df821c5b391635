"""The config reference page, generated from the schema: each section's docstring is the single source of its field
docs (``Fields:`` blocks in ``schema.py``). ``python -m ltx2train.config.reference > docs/config-reference.md``
writes the page; ``python -m ltx2train.config.reference --recipes recipes`` rewrites the commented recipes
(``COMMENTED_RECIPES``: every field under its doc, at the recipe's values); ``tests/unit/test_config_reference.py``
fails when the page or a commented recipe is stale, or a field has no doc.

Only the standard library and the schema are imported (no torch).
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
import textwrap
from pathlib import Path

from omegaconf import MISSING

from ltx2train.config.schema import Config, DataConfig, DatasetSource
from ltx2train.utils.atomic import write_text_atomic

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


# The commented recipes: every field of the schema, each under its doc (the same docs as the page). A test checks
# that each of them is what ``commented_recipe`` makes of its own values.
COMMENTED_RECIPES = ("t2av_lora.yaml", "ltx2.3_t2av_lora.yaml", "ltx2.5_t2av_lora.yaml")
_WIDTH = 118
# An empty list of entries shows one, commented, so that the entry's fields are in the recipe too.
_EXAMPLES = {("data", "datasets"): {"metadata": "/data/more_clips/metadata.csv", "cache_dir": "/data/more_clips/cache"}}


def commented_recipe(text: str) -> str:
    """A recipe's text rewritten from the schema: its opening comment block kept, then every section and field in
    the schema's order, each with its doc as comments, at the recipe's value (the schema's default where the
    recipe leaves a field out). Interpolations and relative paths stay as written."""
    from omegaconf import OmegaConf

    lines = text.splitlines()
    header = lines[: next((i for i, line in enumerate(lines) if not line.startswith("#")), len(lines))]  # to a blank
    merged = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.create(text))
    values = OmegaConf.to_container(merged, resolve=False)
    out = [line.rstrip() for line in header]
    for name, cls in sections():
        out += [""] * bool(out) + _comment(summary(cls), "") + [f"{name}:"]
        docs = field_docs(cls)
        for f in dataclasses.fields(cls):
            out += _comment(docs[f.name], "  ")
            if not values[name][f.name] and (name, f.name) in _EXAMPLES:
                example = {f.name: [{**_defaults(DatasetSource), **_EXAMPLES[name, f.name]}]}
                out += _comment("For example:", "  ") + [f"  # {line}" for line in _yaml(example)]
            out += [f"  {line}" for line in _yaml({f.name: values[name][f.name]})]
    return "\n".join(out) + "\n"


def _comment(doc: str, indent: str) -> list[str]:
    text = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", doc).replace("``", "`")
    return textwrap.wrap(text, _WIDTH - len(indent) - 2, initial_indent=f"{indent}# ", subsequent_indent=f"{indent}# ")


def _defaults(cls) -> dict:
    return {f.name: None if f.default in (MISSING, dataclasses.MISSING) else f.default for f in dataclasses.fields(cls)}


def _yaml(value: dict) -> list[str]:
    """``key: value`` as YAML: lists of short scalars in flow style (``[a, b]``), anything longer in block style."""
    import yaml

    ((key, item),) = value.items()
    if isinstance(item, list) and not any(isinstance(v, (dict, list)) or len(str(v)) > 30 for v in item):
        return [f"{key}: {yaml.safe_dump(item, default_flow_style=True, width=10**6).strip()}"]
    dumped = yaml.safe_dump(value, sort_keys=False, default_flow_style=False, width=_WIDTH, allow_unicode=True)
    return dumped.removesuffix("\n...\n").rstrip("\n").splitlines()


def _main(argv: list[str]) -> None:
    """No argument: the page on stdout. ``--recipes DIR``: rewrite the commented recipes in DIR from the schema."""
    if not argv:
        sys.stdout.write(render())
        return
    if argv[0] != "--recipes" or len(argv) != 2:
        sys.exit("usage: python -m ltx2train.config.reference [--recipes DIR]")
    for name in COMMENTED_RECIPES:
        path = Path(argv[1]) / name
        write_text_atomic(path, commented_recipe(path.read_text()))


if __name__ == "__main__":
    _main(sys.argv[1:])
