"""Training strategies: how a cached batch becomes transformer inputs, targets and loss masks.

A training mode is a preset of per-modality roles and conditions (``composed.py``, ``conditions.py``), not a
class of its own and not an ``if`` in the loop. A strategy has ``name``, ``inputs(batch, context, generator=None,
sigma=None) -> StepInputs``, ``loss(video_pred, audio_pred, inputs) -> (total, parts)`` and ``frozen_modules``
(what no step trains: the method leaves it alone).
"""

from __future__ import annotations

from ltx2train.config.schema import Config, StrategyConfig
from ltx2train.training.strategies.composed import PRESETS, Preset, Strategy
from ltx2train.models.forward import pack_audio, pack_video, uses_keyframes
from ltx2train.training.strategies.tokens import StepInputs
from ltx2train.utils.errors import UserError

__all__ = [
    "PRESETS",
    "Preset",
    "StepInputs",
    "Strategy",
    "build_strategy",
    "check_strategy",
    "pack_audio",
    "pack_video",
    "preset_of",
]


def preset_of(strategy_cfg: StrategyConfig) -> Preset:
    """``strategy.name``'s preset with ``strategy.video`` / ``strategy.audio`` where they are set."""
    base = PRESETS[strategy_cfg.name]
    return Preset(strategy_cfg.video or base.video, strategy_cfg.audio or base.audio, base.first_frame, base.reference)


def check_strategy(cfg: Config, settings: dict) -> None:
    """What the strategy needs from the cache (its ``settings``), refused before any weight loads."""
    preset, name = preset_of(cfg.strategy), cfg.strategy.name
    if preset.audio != "none" and not settings["with_audio"]:
        raise UserError(
            f"strategy {name} has audio {preset.audio}, but {cfg.data.cache_dir} was prepared with "
            "data.with_audio=false: prepare with audio, or set strategy.audio=none (video only)"
        )
    extras = set(settings.get("extras", "").split(","))
    if preset.reference and "reference" not in extras:
        raise UserError(
            f"strategy {name} needs reference latents, but {cfg.data.cache_dir} has none: prepare "
            "with data.extras including reference"
        )
    if cfg.strategy.caption_dropout > 0 and "empty_prompt" not in extras:
        raise UserError(
            f"strategy.caption_dropout needs the empty prompt, but {cfg.data.cache_dir} has none: "
            "prepare with data.extras including empty_prompt"
        )


def build_strategy(cfg: Config, dataset=None, transformer=None) -> Strategy:
    """The recipe's strategy. ``dataset`` (a CachedDataset) gives the empty prompt and the reference downscale;
    ``transformer`` (unwrapped) its video RoPE and audio width, where the strategy needs them."""
    st = cfg.strategy
    settings = dataset.settings if dataset is not None else {}
    needs_empty = st.caption_dropout > 0
    return Strategy(
        st.name,
        preset_of(st),
        cfg.objective,
        fps=cfg.data.fps,
        caption_dropout=st.caption_dropout,
        first_frame_probability=st.first_frame_probability,
        independent_sigma=st.independent_sigma,
        empty_prompt=dataset.empty_prompt() if needs_empty and dataset is not None else None,
        reference_downscale=settings.get("reference_downscale", 0),
        rope=getattr(transformer, "rope", None),
        audio_channels=transformer.config.audio_in_channels if transformer is not None else None,
        keyframes=uses_keyframes(transformer.config if transformer is not None else _transformer_config(cfg)),
    )


def _transformer_config(cfg: Config) -> dict:
    """Without a built transformer: the recipe's variant's transformer config."""
    from ltx2train.models.specs import load_variant

    return load_variant(cfg.model.variant).component("transformer").config
