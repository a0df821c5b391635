"""The schema's dotted keys, their types in words, and did-you-mean messages for unknown keys and values."""

from __future__ import annotations

import dataclasses
import difflib
import typing
from typing import Any, List, Sequence, Union

from ltx2train.config.schema import Config


def _schema(cls: type = Config, prefix: str = "") -> tuple[dict[str, Any], dict[str, type]]:
    """(leaf dotted key -> annotation, section dotted key -> dataclass) for ``cls``."""
    leaves: dict[str, Any] = {}
    sections: dict[str, type] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        ann = hints[f.name]
        if dataclasses.is_dataclass(ann):
            sections[key] = ann
            sub_leaves, sub_sections = _schema(ann, key + ".")
            leaves.update(sub_leaves)
            sections.update(sub_sections)
        else:
            leaves[key] = ann
    return leaves, sections


LEAVES, SECTIONS = _schema()


def valid_keys() -> list[str]:
    """Every valid dotted key: sections and fields."""
    return sorted([*SECTIONS, *LEAVES])


def is_optional(ann: Any) -> bool:
    return typing.get_origin(ann) is Union and type(None) in typing.get_args(ann)


def base_type(ann: Any) -> Any:
    if is_optional(ann):
        return next(a for a in typing.get_args(ann) if a is not type(None))
    return ann


def entry_type(ann: Any) -> Any:
    """The dataclass of a list-of-entries annotation (``List[DatasetSource]``), else ``None``."""
    if typing.get_origin(ann) in (list, List):
        (item,) = typing.get_args(ann)
        if dataclasses.is_dataclass(item):
            return item
    return None


def field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def type_name(ann: Any) -> str:
    if is_optional(ann):
        return f"{type_name(base_type(ann))} or null"
    if entry_type(ann) is not None:
        item = entry_type(ann)
        return f"list of {item.__name__} mappings ({', '.join(field_names(item))})"
    if typing.get_origin(ann) in (list, List):
        (item,) = typing.get_args(ann)
        return f"list of {type_name(item)}"
    return getattr(ann, "__name__", str(ann))


# Names other trainers give our keys (DiffSynth-Studio's train.py flags first): a known alias beats edit distance
KEY_ALIASES = {
    "dataset_repeat": "data.repeats",
    "frame_rate": "data.fps",
    "save_steps": "train.checkpoint_every",
    "use_gradient_checkpointing_offload": "memory.activation_offload",
    "learning_rate": "optimizer.lr",
    "lora_rank": "lora.rank",
    "lora_target_modules": "lora.target_modules",
    "output_path": "train.output_dir",
    "use_gradient_checkpointing": "train.gradient_checkpointing",
    "dataset_metadata_path": "data.metadata",
    "dataset_base_path": "data.root",
    "lora_checkpoint": "lora.init_from",
    "num_epochs": "train.num_epochs",
    "max_train_steps": "train.max_steps",
    "train_batch_size": "data.batch_size",
    "gradient_accumulation": "train.gradient_accumulation_steps",
    "lr": "optimizer.lr",
}


def _alias(key: str) -> str | None:
    target = KEY_ALIASES.get(key.rpartition(".")[2])
    return target if target in LEAVES and target != key else None


def unknown_key_message(key: str) -> str:
    list_key = key.partition("[")[0]
    item = entry_type(LEAVES.get(list_key)) if list_key != key else None
    if item is not None:  # data.datasets[0].weight=2
        example = ", ".join(f"{name}: ..." for name in field_names(item)[:2])
        return (
            f"unknown config key '{key}': the entries of '{list_key}' are not set one by one; give the whole "
            f"list ({list_key}=[{{{example}}}, ...])"
        )
    match = [_alias(key)] if _alias(key) else difflib.get_close_matches(key, valid_keys(), n=1)
    if match:
        return f"unknown config key '{key}' — did you mean '{match[0]}'?"
    parent = key.rpartition(".")[0]
    if parent in SECTIONS:
        return f"unknown config key '{key}' (valid keys in '{parent}': {', '.join(field_names(SECTIONS[parent]))})"
    return f"unknown config key '{key}' (valid sections: {', '.join(f.name for f in dataclasses.fields(Config))})"


def unknown_field_message(where: str, name: Any, cls: type) -> str:
    """``where`` is an entry's dotted key (``data.datasets[1]``); ``name`` a key in it that ``cls`` lacks."""
    match = difflib.get_close_matches(str(name), field_names(cls), n=1)
    if match:
        return f"{where}.{name}: unknown key — did you mean '{match[0]}'?"
    return f"{where}.{name}: unknown key (valid keys of {cls.__name__}: {', '.join(field_names(cls))})"


def choice_message(key: str, value: Any, choices: Sequence[str]) -> str:
    msg = f"{key}: expected one of {' | '.join(choices)}, got {value!r}"
    match = difflib.get_close_matches(str(value), choices, n=1)
    if match:
        msg += f" — did you mean '{match[0]}'?"
    return msg
