"""YAML recipe + ``key=value`` overrides -> a validated :class:`Config` (see the package docstring), and back."""

from __future__ import annotations

import csv
import dataclasses
import os
import re
import typing
from pathlib import Path
from typing import Any, Iterable, List, Sequence, Union

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ltx2train.config.fields import (
    LEAVES,
    SECTIONS,
    base_type,
    entry_type,
    field_names,
    is_optional,
    type_name,
    unknown_field_message,
    unknown_key_message,
)
from ltx2train.config.schema import ENTRY_PATH_KEYS, PATH_KEYS, RESUME_KEYWORDS, Config, ConfigError
from ltx2train.config.rules import looks_like_path, shipped_variants, validate
from ltx2train.utils.atomic import write_text_atomic

# --------------------------------------------------------------------------------------------------
# YAML parsing (YAML 1.2-style booleans, floats such as 1e-4)
# --------------------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    pass


_BOOL_TAG = "tag:yaml.org,2002:bool"
_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != _BOOL_TAG]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - SafeLoader subclass


# --------------------------------------------------------------------------------------------------
# Collecting (key, value) assignments
# --------------------------------------------------------------------------------------------------


def _flatten(data: Any, prefix: str, errors: list[str], out: list[tuple[str, Any]]) -> None:
    """Walk a (section) mapping against the schema, appending leaf assignments to ``out``."""
    for raw_key, value in data.items():
        key = f"{prefix}{raw_key}"
        if not isinstance(raw_key, str):
            errors.append(f"config keys must be strings, got {raw_key!r} in '{prefix.rstrip('.') or '<top level>'}'")
        elif key in SECTIONS:
            if value is None:  # an empty section: keep the defaults
                continue
            if not isinstance(value, dict):
                errors.append(f"{key}: expected a mapping of {SECTIONS[key].__name__} fields, got {value!r}")
                continue
            _flatten(value, key + ".", errors, out)
        elif key in LEAVES:
            out.append((key, value))
        else:
            errors.append(unknown_key_message(key))


def _parse_override(item: str, errors: list[str], out: list[tuple[str, Any]]) -> None:
    if not isinstance(item, str) or "=" not in item:
        errors.append(f"malformed override {item!r}: expected key=value (e.g. train.max_steps=10)")
        return
    key, _, raw = item.partition("=")
    key = key.strip()
    if not key:
        errors.append(f"malformed override {item!r}: empty key")
        return
    if key in LEAVES:
        ann = LEAVES[key]
        if (
            base_type(ann) is str
            and not (raw.startswith(("'", '"')))
            and not (is_optional(ann) and raw.strip() in ("null", "~"))
        ):
            out.append((key, raw))  # strings are taken literally
            return
    elif key not in SECTIONS:
        errors.append(unknown_key_message(key))
        return
    try:
        value = _yaml_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        errors.append(f"malformed override {item!r}: cannot parse value: {_one_line(exc)}")
        return
    if key in LEAVES and LEAVES[key] == List[str] and isinstance(value, list):
        if not all(isinstance(x, (str, int, float)) and not isinstance(x, bool) for x in value):
            # e.g. [a cat: sleeping, a dog] -- YAML reads "a cat: sleeping" as a mapping; take the
            # comma-separated items literally instead (quote items that contain commas).
            value = _split_list(raw)
    if key in SECTIONS:
        if not isinstance(value, dict):
            errors.append(f"{key}: expected a mapping of {SECTIONS[key].__name__} fields, got {value!r}")
            return
        _flatten(value, key + ".", errors, out)
    else:
        out.append((key, value))


def _split_list(raw: str) -> list[str]:
    inner = raw.strip()
    if inner.startswith("[") and inner.endswith("]"):
        inner = inner[1:-1]
    if not inner.strip():
        return []
    row = next(csv.reader([inner], skipinitialspace=True))
    return [item.strip() for item in row]


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


COMMA_LISTS = ("lora.target_modules",)  # list keys that also take one comma-separated string


def _assign(cfg: Any, key: str, value: Any, errors: list[str]) -> None:
    """Set the leaf ``key`` of ``cfg``; a list of entries (``data.datasets``) is built entry by entry."""
    ann = LEAVES[key]
    if key == "train.resume" and value in (None, "null", "~"):
        value = "none"
    if key in COMMA_LISTS and isinstance(value, str):  # DiffSynth's form: lora.target_modules=to_k,to_q,to_v
        value = [part.strip() for part in value.split(",") if part.strip()]
    if entry_type(ann) is not None and isinstance(value, list):
        value = _entries(key, entry_type(ann), value, errors)
    _set(cfg, key, key, ann, value, errors)


def _entries(key: str, cls: type, value: list, errors: list[str]) -> list:
    """Each mapping of ``value`` -> a structured ``cls`` node, its fields set (and checked) one by one; a field
    left out stays MISSING (the loader reports a required one)."""
    hints = typing.get_type_hints(cls)
    nodes = []
    for i, entry in enumerate(value):
        where = f"{key}[{i}]"
        if not isinstance(entry, dict):
            errors.append(
                f"{where}: expected a mapping of {cls.__name__} fields ({', '.join(field_names(cls))}), got {entry!r}"
            )
            continue
        node = OmegaConf.structured(cls)
        for name, field_value in entry.items():
            if name in hints:
                _set(node, name, f"{where}.{name}", hints[name], field_value, errors)
            else:
                errors.append(unknown_field_message(where, name, cls))
        nodes.append(node)
    return nodes


def _set(node: Any, path: str, key: str, ann: Any, value: Any, errors: list[str]) -> None:
    """OmegaConf types the value (a mapping or list where a scalar belongs, a scalar where a list does, a
    non-number for a number: refused); two rules are stricter or kinder than its own: 3.0 is a fine int, and
    0/1 are not booleans (OmegaConf would take them).  ``key`` names ``path`` of ``node`` in messages."""
    base = base_type(ann)
    if base is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    if base is bool and isinstance(value, (int, float)) and not isinstance(value, bool):
        errors.append(f"{key}: expected bool, got {value!r}")
        return
    try:
        OmegaConf.update(node, path, value, merge=False)
    except OmegaConfBaseException:
        errors.append(f"{key}: expected {type_name(ann)}, got {value!r}")


def _missing(cfg: Any, errors: list[str]) -> None:
    """Report unset required values, those of list entries (``data.datasets[0].cache_dir``) too."""
    for key in LEAVES:
        parent_key, _, name = key.rpartition(".")
        if OmegaConf.is_missing(OmegaConf.select(cfg, parent_key), name):
            errors.append(f"{key} is required")
        elif entry_type(LEAVES[key]) is not None:
            for i, node in enumerate(OmegaConf.select(cfg, key)):
                errors += [
                    f"{key}[{i}].{n} is required"
                    for n in field_names(entry_type(LEAVES[key]))
                    if OmegaConf.is_missing(node, n)
                ]


# --------------------------------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------------------------------


def _is_dot_relative(value: str) -> bool:
    return value in (".", "..") or value.startswith(("./", "../", ".\\", "..\\"))


def _resolve_path(value: str, recipe_dir: Path, from_recipe: bool) -> str:
    value = os.path.expanduser(value)
    if os.path.isabs(value):
        return os.path.normpath(value)
    base = recipe_dir if (from_recipe and _is_dot_relative(value)) else Path.cwd()
    return os.path.abspath(os.path.join(base, value))


def _absolute_paths(cfg: Any, recipe_dir: Path, origin: dict[str, str]) -> None:
    """Make the path values absolute; an entry's paths (``data.datasets[i].cache_dir``) follow its list's origin."""

    def fix(node: Any, name: str, key: str) -> None:
        value = node[name]
        if isinstance(value, str) and value:
            node[name] = _resolve_path(value, recipe_dir, origin.get(key) == "recipe")

    for key in PATH_KEYS:
        fix(OmegaConf.select(cfg, key.rpartition(".")[0]), key.rpartition(".")[2], key)
    if cfg.train.resume not in RESUME_KEYWORDS:
        fix(cfg.train, "resume", "train.resume")
    if cfg.model.variant not in shipped_variants() and looks_like_path(cfg.model.variant):
        fix(cfg.model, "variant", "model.variant")
    for key, names in ENTRY_PATH_KEYS.items():
        for node in OmegaConf.select(cfg, key):
            for name in names:
                fix(node, name, key)


def _entry_values(cfg: Any, key: str) -> list[tuple[str, Any]]:
    """For a path key of the first dataset (``data.metadata``): the same field of every ``data.datasets`` entry,
    as (dotted key, value) pairs; otherwise none."""
    section, _, name = key.rpartition(".")
    pairs = []
    for list_key, names in ENTRY_PATH_KEYS.items():
        if list_key.rpartition(".")[0] == section and name in names:
            pairs += [(f"{list_key}[{i}].{name}", node[name]) for i, node in enumerate(OmegaConf.select(cfg, list_key))]
    return pairs


def _raise(errors: list[str], source: str) -> None:
    if not errors:
        return
    if len(errors) == 1:
        raise ConfigError(errors[0])
    raise ConfigError(f"{len(errors)} problems in {source}:\n" + "\n".join(f"  - {e}" for e in errors))


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


def load_config(recipe: Union[str, Path], overrides: Sequence[str] = (), *, check_paths: Iterable[str] = ()) -> Config:
    """Load ``recipe`` (YAML), apply ``key=value`` ``overrides`` in order, validate, return a :class:`Config`.

    ``check_paths`` lists dotted keys (e.g. ``("model.checkpoint", "data.metadata")``) whose paths
    must exist (a first-dataset key such as ``data.metadata`` checks that field of every ``data.datasets``
    entry too).  Every problem raises :class:`ConfigError`; see the module docstring for the path resolution
    rules.
    """
    recipe_path = Path(recipe).expanduser()
    if not recipe_path.is_file():
        raise ConfigError(f"recipe {recipe_path} does not exist")
    recipe_dir = recipe_path.resolve().parent
    source = f"{recipe_path}" + (" + overrides" if overrides else "")
    if isinstance(overrides, str):
        overrides = [overrides]

    try:
        data = _yaml_load(recipe_path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{recipe_path}: invalid YAML: {_one_line(exc)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{recipe_path}: expected a mapping of sections at the top level, got {type(data).__name__}")

    errors: list[str] = []
    recipe_items: list[tuple[str, Any]] = []
    _flatten(data, "", errors, recipe_items)
    override_items: list[tuple[str, Any]] = []
    for item in overrides:
        _parse_override(item, errors, override_items)
    _raise(errors, source)

    cfg = OmegaConf.structured(Config)
    origin: dict[str, str] = {}
    for key, value in recipe_items:
        _assign(cfg, key, value, errors)
        origin[key] = "recipe"
    for key, value in override_items:
        _assign(cfg, key, value, errors)
        origin[key] = "override"
    _raise(errors, source)

    _missing(cfg, errors)
    _raise(errors, source)

    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None)
        prefix = f"{key}: " if key else ""
        raise ConfigError(f"{prefix}cannot resolve interpolation: {_one_line(exc).split(' full_key:')[0]}") from None

    _absolute_paths(cfg, recipe_dir, origin)
    try:
        result = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as exc:  # pragma: no cover - types were checked above
        raise ConfigError(_one_line(exc)) from None
    assert isinstance(result, Config)
    if result.lora.alpha is None:  # null: alpha = rank (scale 1), whatever rank the overrides set
        result.lora.alpha = float(result.lora.rank)

    errors = validate(result)
    _raise(errors, source)

    for key in check_paths:
        if key not in LEAVES:
            raise ConfigError(unknown_key_message(key))
        for shown, value in [(key, OmegaConf.select(cfg, key)), *_entry_values(cfg, key)]:
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"check_paths: {key} does not hold a path")
            if value is not None and not Path(value).exists():
                errors.append(f"{shown}: {value} does not exist")
    _raise(errors, source)
    return result


def config_to_dict(cfg: Config) -> dict:
    """A plain nested ``dict`` copy of ``cfg`` (for trackers and JSON)."""
    if not isinstance(cfg, Config):
        raise TypeError(f"expected a Config, got {type(cfg).__name__}")
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: Union[str, Path]) -> Path:
    """Write ``cfg`` as resolved YAML to ``path`` atomically; return the path."""
    text = "# resolved ltx2train config (written by ltx2train.config.save_config)\n"
    text += OmegaConf.to_yaml(OmegaConf.structured(cfg), resolve=True)
    return write_text_atomic(path, text)
