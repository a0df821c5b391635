"""What a training run trains, as one module: the transformer alone, or the transformer with the text connectors.

With ``train.trainable: [transformer, connectors]`` the connectors run inside the trained module's forward, on the
cached projected text features, so that every backend wraps, shards, checkpoints and steps both as one model (one
DDP reducer, one FSDP2 root, one DeepSpeed engine) and the connectors' gradients come from the transformer's loss.
The text embedding projection (``text_proj_in`` and LTX-2.3's per-modality projections) ran in ``prepare`` (the
cache holds its output), so it stays frozen: only the two connector transformers are trained.

State-dict names of the pair are ``transformer.<name>`` and ``connectors.<name>``; :func:`trained_parts` gives each
component with its prefix, so exports and LoRA files name modules as the component itself does.
"""

from __future__ import annotations

import re

import torch

from ltx2train.models.forward import text_kwargs
from ltx2train.models.text_encoder import ProjectedText, connect_text

TRAINABLE = ("transformer", "connectors")
# the connector transformers (what runs in the step); the projection before them ran in prepare
CONNECTOR_TRAINED = re.compile(r"(video_connector|audio_connector)\..*")


class TransformerWithConnectors(torch.nn.Module):
    """The transformer and the text connectors trained together: ``forward(text_video=, text_audio=,
    text_attention_mask=, **transformer_kwargs)`` runs the connectors (with their graph) on the projected text and
    gives their video/audio context to the transformer in place of ``encoder_hidden_states`` & co."""

    def __init__(self, transformer: torch.nn.Module, connectors: torch.nn.Module):
        super().__init__()
        self.transformer, self.connectors = transformer, connectors

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.dtype

    @property
    def config(self):
        return self.transformer.config

    def forward(
        self, text_video: torch.Tensor, text_audio: torch.Tensor | None, text_attention_mask: torch.Tensor, **kwargs
    ):
        dtype = next(self.connectors.video_connector.parameters()).dtype  # float32 under full fine-tuning
        cast = lambda t: None if t is None else t.to(dtype)  # noqa: E731
        context = connect_text(self.connectors, ProjectedText(cast(text_video), cast(text_audio), text_attention_mask))
        return self.transformer(**kwargs, **text_kwargs(context))


def trained_module(transformer: torch.nn.Module, connectors: torch.nn.Module, trainable) -> torch.nn.Module:
    """The module a run trains for ``train.trainable``: the transformer, or the pair."""
    return TransformerWithConnectors(transformer, connectors) if "connectors" in trainable else transformer


def trained_parts(model: torch.nn.Module) -> dict[str, tuple[torch.nn.Module, str]]:
    """``{component: (module, state-dict prefix)}`` of a trained module (the transformer alone has no prefix)."""
    if isinstance(model, TransformerWithConnectors):
        return {"transformer": (model.transformer, "transformer."), "connectors": (model.connectors, "connectors.")}
    return {"transformer": (model, "")}


def transformer_of(model: torch.nn.Module) -> torch.nn.Module:
    return trained_parts(model)["transformer"][0]


def split_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """A state dict of the trained module -> one per component, in the component's own names."""
    out = {}
    for component, (_, prefix) in trained_parts(model).items():
        others = [p for c, (_, p) in trained_parts(model).items() if c != component and p]
        out[component] = {
            k[len(prefix) :]: v
            for k, v in state.items()
            if k.startswith(prefix) and not any(k.startswith(p) for p in others)
        }
    return out


def frozen_pattern(component: str, frozen: str | None) -> str | None:
    """A regex of the ``component``'s module / parameter names nothing trains: the strategy's ``frozen`` (which
    names the audio connector too, ``audio_connector``, when the audio branch does not run) and, on the
    connectors, everything outside the two connector transformers."""
    if component != "connectors":
        return frozen
    outside = r"(?!(?:video_connector|audio_connector)\.).*"
    return outside if frozen is None else f"(?:{outside})|(?:{frozen})"


def trainable_signature(trainable) -> dict[str, str]:
    """What a checkpoint records of ``train.trainable`` (a resume must train the same components)."""
    return {"trainable": ",".join(trainable)}
