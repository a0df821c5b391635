"""Which original keys live in which file: the official single file and the repackaged split files."""

from __future__ import annotations

from dataclasses import dataclass

from ltx2train.models.keys import DIT_PREFIX

_CONNECTOR_PREFIXES = (
    "text_embedding_projection.",
    DIT_PREFIX + "video_embeddings_connector.",
    DIT_PREFIX + "audio_embeddings_connector.",
)


def owner_of(original_key: str) -> str | None:
    """The component an original key of the official single file belongs to (None if foreign)."""
    if original_key.startswith(_CONNECTOR_PREFIXES):
        return "connectors"
    if original_key.startswith(DIT_PREFIX):
        return "transformer"
    for prefix, component in (("vae.", "video_vae"), ("audio_vae.", "audio_vae"), ("vocoder.", "vocoder")):
        if original_key.startswith(prefix):
            return component
    return None


@dataclass(frozen=True)
class SplitFile:
    filename: str
    component: str
    part: str | None = None  # "encoder"/"decoder" for the VAEs: which half of the keys the file holds

    def holds(self, original_key: str) -> bool:
        if owner_of(original_key) != self.component:
            return False
        if self.part is None:
            return True
        prefix = "vae." if self.component == "video_vae" else "audio_vae."
        # the per-channel statistics are written into both halves
        return original_key.startswith(f"{prefix}{self.part}.") or original_key.startswith(
            f"{prefix}per_channel_statistics."
        )


# The DiffSynth repackage of LTX-2 / LTX-2.3: same original keys, one file per component.
SPLIT_FILES: tuple[SplitFile, ...] = (
    SplitFile("transformer.safetensors", "transformer"),
    SplitFile("text_encoder_post_modules.safetensors", "connectors"),
    SplitFile("video_vae_encoder.safetensors", "video_vae", "encoder"),
    SplitFile("video_vae_decoder.safetensors", "video_vae", "decoder"),
    SplitFile("audio_vae_encoder.safetensors", "audio_vae", "encoder"),
    SplitFile("audio_vae_decoder.safetensors", "audio_vae", "decoder"),
    SplitFile("audio_vocoder.safetensors", "vocoder"),
)
DISTILLED_TRANSFORMER_FILE = "transformer_distilled.safetensors"
# The x2 spatial upscalers' file names as Lightricks publishes them, per version (always its own, unprefixed file).
_UPSCALER_BY_FAMILY = {"2.0": "ltx-2-spatial-upscaler-x2-1.0.safetensors",
                       "2.3": "ltx-2.3-spatial-upscaler-x2-1.0.safetensors",
                       "2.5": "ltx-2.5-latent-spatial-upscaler-x2-bf16-1.0.safetensors"}
UPSCALER_FILES = tuple(_UPSCALER_BY_FAMILY.values())


def upscaler_file(family: str) -> str:
    """The x2 upscaler's published file name for a version (``2.0``: LTX-2's, ``2.3``, ``2.5``)."""
    return _UPSCALER_BY_FAMILY[family]

# Components that go into the official single file (the upscaler never does).
SINGLE_FILE_COMPONENTS = ("transformer", "connectors", "video_vae", "audio_vae", "vocoder")


def split_files_for(component: str) -> tuple[SplitFile, ...]:
    return tuple(f for f in SPLIT_FILES if f.component == component)
