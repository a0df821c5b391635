"""DiffSynth-Studio's LTX-2 Python API on ltx2train: a DiffSynth script runs after changing its ``diffsynth`` import
lines to this module, nothing else::

    from ltx2train.compat.diffsynth import LTX2AudioVideoPipeline, ModelConfig, VideoData, write_video_audio_ltx2

``LTX2AudioVideoPipeline`` (``from_pretrained(model_configs=..., tokenizer_config=..., stage2_lora_config=...)``,
``pipe.dit``, ``pipe.load_lora(pipe.dit, path | ModelConfig, alpha=...)``, ``clear_lora_before_state_two``),
``ModelConfig`` (files under ``$DIFFSYNTH_MODEL_BASE_PATH/<model_id>/``; nothing is downloaded), ``VideoData`` and
``write_video_audio_ltx2`` with DiffSynth's signatures.
"""

from ltx2train.compat.diffsynth.media import VideoData, write_video_audio_ltx2
from ltx2train.inference.av_pipeline import LTX2AudioVideoPipeline
from ltx2train.inference.model_configs import ModelConfig

__all__ = ["LTX2AudioVideoPipeline", "ModelConfig", "VideoData", "write_video_audio_ltx2"]
