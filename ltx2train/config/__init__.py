"""Typed training configuration: YAML recipe + ``key=value`` overrides -> validated :class:`Config`.

A *recipe* is a YAML file whose top-level sections mirror :class:`Config` (``model``, ``data``,
``lora``, ``optimizer``, ``objective``, ``train``, ``validation``, ``tracker``).  Every section and
every field is optional in the recipe except the ``MISSING`` ones (model.checkpoint,
model.text_encoder, data.metadata, data.cache_dir, train.output_dir), which must be set either in
the recipe or through an override.  OmegaConf interpolations (``${train.output_dir}/cache``,
``${oc.env:HOME}``) may be used in values.

Loading (:func:`load_config`) goes:

1. parse the YAML (YAML 1.2 booleans: only ``true``/``false`` are booleans, so ``mixed_precision: no``
   is the string ``"no"``; ``1e-4`` is a float);
2. check every key of the recipe and of the overrides against the schema -- an unknown key is an
   error that names the full dotted key and suggests the closest valid one;
3. apply the values onto the OmegaConf structured schema (types are checked and converted there),
   then the overrides, in order, so later ones win;
4. report unset required values, resolve interpolations, make paths absolute (see below);
5. validate values (frame counts, multiples of 32, enumerations, ranges) and, optionally, that
   some paths exist.

Every problem is raised as a :class:`ConfigError` before anything heavy (torch, models) is imported:
this module only imports the standard library, ``yaml`` and ``omegaconf``.

Path resolution (model.checkpoint, model.text_encoder, model.variant when it is a ``.json`` path,
data.metadata, data.root, data.cache_dir, the metadata, root and cache_dir of each ``data.datasets`` entry,
train.output_dir, lora.init_from, train.resume when it is a path):

* ``~`` is expanded; absolute paths are kept as they are (normalised);
* a value written in the recipe that starts with ``./`` or ``../`` is relative to the directory of
  the recipe file, so a recipe can refer to files next to it;
* any other relative value (``outputs/run``) -- and every relative value given as a command-line
  override -- is relative to the current working directory.

The loaded :class:`Config` always holds absolute paths, so :func:`save_config` writes a
self-contained, fully resolved YAML that loads back to an equal :class:`Config`.

Several datasets: ``data.metadata`` / ``data.cache_dir`` / ``data.root`` (with ``data.repeats`` and
``data.weight``) are the first dataset; ``data.datasets`` lists more (:class:`DatasetSource` entries with the
same five fields, each key of an entry checked like any other), every other data setting shared.
:func:`dataset_sources` gives them as one list.  ``check_paths`` naming a first-dataset path key
(``data.metadata``) checks that field of every entry too.

Override syntax: ``section.field=value``; the value is parsed as YAML (``train.max_steps=10``,
``optimizer.betas=[0.9,0.95]``, ``validation.prompts=[a cat,a dog]``, ``data.root=null``,
``data.datasets=[{metadata: b.csv, cache_dir: b_cache}]``).  For string fields the text after ``=`` is
taken literally (so prompts may contain ``:`` or ``#``) unless it is ``null``/``~`` (for optional fields)
or is quoted.
"""

from __future__ import annotations

from ltx2train.config.fields import valid_keys
from ltx2train.config.load import config_to_dict, load_config, save_config
from ltx2train.config.schema import (
    PATH_KEYS,
    Config,
    ConfigError,
    DataConfig,
    DatasetSource,
    DistributedConfig,
    LoRAConfig,
    ModelConfig,
    ObjectiveConfig,
    OptimizerConfig,
    TrackerConfig,
    TrainConfig,
    ValidationConfig,
    dataset_sources,
)

__all__ = [
    "PATH_KEYS",
    "Config",
    "ConfigError",
    "DataConfig",
    "DatasetSource",
    "DistributedConfig",
    "LoRAConfig",
    "ModelConfig",
    "ObjectiveConfig",
    "OptimizerConfig",
    "TrackerConfig",
    "TrainConfig",
    "ValidationConfig",
    "config_to_dict",
    "dataset_sources",
    "load_config",
    "save_config",
    "valid_keys",
]
