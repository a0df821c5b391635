"""Training strategies: how a cached batch becomes transformer inputs, targets and loss masks.

A new training mode (image-to-video, IC-LoRA, video-only) is a new strategy, not an ``if`` in the loop.
Each strategy has ``name``, ``inputs(batch, context, generator=None, sigma=None) -> StepInputs`` and
``loss(video_pred, audio_pred, inputs) -> (total, parts)``.
"""

from __future__ import annotations

from ltx2train.training.strategies.t2av import StepInputs, TextToAudioVideo, pack_audio, pack_video

STRATEGIES = {TextToAudioVideo.name: TextToAudioVideo}

__all__ = ["STRATEGIES", "StepInputs", "TextToAudioVideo", "build_strategy", "pack_audio", "pack_video"]


def build_strategy(cfg):
    return TextToAudioVideo(cfg.objective, fps=cfg.data.fps)
