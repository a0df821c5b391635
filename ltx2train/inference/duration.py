"""How long a clip a prompt asks for, from LTX-2.5's duration head (diffusers ``LTX2DurationHead``).

The head reads the text connectors' video and audio output for one prompt and predicts its natural duration in
seconds; ``predict_num_frames`` clamps it to [1 s, 20 s] at the sample's frame rate and snaps it to the VAE's 8k+1
frame grid, as diffusers' ``LTX2Pipeline`` does when ``num_frames`` is omitted.
"""

from __future__ import annotations

import torch

TEMPORAL_COMPRESSION = 8  # the LTX-2 video VAE's frames per latent frame


@torch.no_grad()
def predict_num_frames(
    head: torch.nn.Module,
    connectors: torch.nn.Module,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor,
    fps: float,
) -> list[int]:
    """Per prompt (stacked Gemma hidden states ``(P, T, D)`` and their mask), the frame count its duration gives."""
    from ltx2train.models.text_encoder import TextEmbeddings, apply_connectors

    device = next(connectors.parameters()).device
    frames = []
    for i in range(hidden_states.shape[0]):
        text = TextEmbeddings(hidden_states[i : i + 1].to(device), attention_mask[i : i + 1].to(device))
        context = apply_connectors(connectors, text)
        frames.append(
            head.predict_num_frames(
                context.video, context.audio, frame_rate=fps, temporal_compression_ratio=TEMPORAL_COMPRESSION
            )
        )
    return frames
