"""Which original keys live in which file: the official single file and the repackaged split files."""

from __future__ import annotations

from dataclasses import dataclass

from ltx2train.models.key_maps import DIFFUSION_VAE_PREFIX, DIT_PREFIX, DURATION_HEAD_PREFIX

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
    if original_key.startswith(tuple(DIFFUSION_VAE_PREFIX + p for p in ("decoder.", "per_channel_statistics."))):
        return "video_diffusion_decoder"  # (the conv encoder's copy in its file, ``encoder.*``, is the video VAE's)
    if original_key.startswith(DURATION_HEAD_PREFIX):
        return "duration_head"
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
    SplitFile("video_vae_diffusion_decoder.safetensors", "video_diffusion_decoder"),  # LTX-2.5's, where it has one
    SplitFile("duration_head.safetensors", "duration_head"),  # LTX-2.5's
)
DISTILLED_TRANSFORMER_FILE = "transformer_distilled.safetensors"
# The x2 spatial upscalers' file names as Lightricks publishes them, per version (always its own, unprefixed file).
_UPSCALER_BY_FAMILY = {
    "2.0": "ltx-2-spatial-upscaler-x2-1.0.safetensors",
    "2.3": "ltx-2.3-spatial-upscaler-x2-1.0.safetensors",
    "2.5": "ltx-2.5-latent-spatial-upscaler-x2-bf16-1.0.safetensors",
}
UPSCALER_FILES = tuple(_UPSCALER_BY_FAMILY.values())


def upscaler_file(family: str) -> str:
    """The x2 upscaler's published file name for a version (``2.0``: LTX-2's, ``2.3``, ``2.5``)."""
    return _UPSCALER_BY_FAMILY[family]


@dataclass(frozen=True)
class ReleaseFile:
    """One file of a release shipped as a file per part (LTX-2.5: ``Lightricks/LTX-2.5``), found by ``pattern`` under
    the checkpoint directory; ``name`` is the published one. It holds the original keys that start with one of
    ``holds``; ``prefix`` is what its keys lack of those names (the video VAE file's are bare ``encoder.*``...)."""

    name: str
    components: tuple[str, ...]  # the components with keys in it (a component may span several files)
    holds: tuple[str, ...]
    prefix: str = ""
    distilled: bool | None = None  # True / False: only for the distilled / dev transformer; None: both
    # original keys of another file's part that this file repeats (written with it, never read from it), named in
    # it without their first segment: the diffusion VAE file carries the conv VAE's encoder as ``encoder.*``
    repeats: tuple[str, ...] = ()

    @property
    def pattern(self) -> str:
        folder, _, _ = self.name.rpartition("/")
        return f"{folder}/*{_RELEASE_PATTERNS[self.name]}*.safetensors"

    def key_in_file(self, original_key: str) -> str | None:
        """The name ``original_key`` has in this file, or None if the file does not hold it."""
        if not original_key.startswith(self.holds):
            return None
        return original_key[len(self.prefix) :] if self.prefix else original_key

    def original_key(self, key_in_file: str) -> str:
        """The original name of a key as this file stores it."""
        for repeated in self.repeats:
            head = repeated.partition(".")[0] + "."
            if (head + key_in_file).startswith(repeated):
                return head + key_in_file
        return self.prefix + key_in_file

    def repeated_key(self, original_key: str) -> str | None:
        """The name a repeated key of another part has in this file, or None if the file does not repeat it."""
        return original_key.partition(".")[2] if self.repeats and original_key.startswith(self.repeats) else None


_TRANSFORMER_25 = "diffusion_models/ltx-2.5-22b-dev-transformer-bf16.safetensors"
_DISTILLED_25 = "diffusion_models/ltx-2.5-22b-distilled-transformer-bf16.safetensors"
_TEXT_PROJECTION_25 = "text_encoders/gemma4-12b-with-proj-ltx-2.5-bf16.safetensors"
_VIDEO_VAE_25 = "vae/ltx-2.5-video-vae-conv-bf16.safetensors"
_DIFFUSION_VAE_25 = "vae/ltx-2.5-video-vae-bf16.safetensors"
_DURATION_HEAD_25 = "model_patches/ltx-2.5-duration-head-bf16.safetensors"
_AUDIO_VAE_25 = "vae/ltx-2.5-audio-vae-bf16.safetensors"
_UPSCALER_25 = "latent_upscale_models/ltx-2.5-latent-spatial-upscaler-x2-bf16-1.0.safetensors"
_RELEASE_PATTERNS = {
    _TRANSFORMER_25: "-dev-transformer",
    _DISTILLED_25: "-distilled-transformer",
    _TEXT_PROJECTION_25: "-with-proj-",
    _VIDEO_VAE_25: "-video-vae-conv",
    _AUDIO_VAE_25: "-audio-vae",
    _UPSCALER_25: "-spatial-upscaler",
    _DIFFUSION_VAE_25: "-video-vae-bf16",
    _DURATION_HEAD_25: "-duration-head",
}

# LTX-2.5's release (tests/data/reference/ltx25_22b_official_files.json lists each file's keys): the transformer
# file holds the DiT and both text connectors, the Gemma 4 file the text projection next to Gemma's own weights,
# the audio VAE file the vocoder too; its other video VAE file holds the diffusion decoder (and repeats the encoder).
RELEASE_FILES: tuple[ReleaseFile, ...] = (
    ReleaseFile(_TRANSFORMER_25, ("transformer", "connectors"), (DIT_PREFIX,), distilled=False),
    ReleaseFile(_DISTILLED_25, ("transformer",), (DIT_PREFIX,), distilled=True),
    ReleaseFile(_TEXT_PROJECTION_25, ("connectors",), ("text_embedding_projection.",)),
    ReleaseFile(_VIDEO_VAE_25, ("video_vae",), ("vae.",), prefix="vae."),
    ReleaseFile(_AUDIO_VAE_25, ("audio_vae", "vocoder"), ("audio_vae.", "vocoder.")),
    ReleaseFile(_UPSCALER_25, ("spatial_upsampler",), ("",)),
    ReleaseFile(
        _DIFFUSION_VAE_25,
        ("video_diffusion_decoder",),
        (DIFFUSION_VAE_PREFIX,),
        prefix=DIFFUSION_VAE_PREFIX,
        repeats=("vae.encoder.",),
    ),
    ReleaseFile(_DURATION_HEAD_25, ("duration_head",), (DURATION_HEAD_PREFIX,)),
)


def release_names(component: str, original_key: str, present=()) -> list[tuple[str, str]]:
    """(release file, name in it) of an original key: the file it belongs to, then each file of a ``present``
    component that repeats it."""
    entry = next(
        e
        for e in RELEASE_FILES
        if component in e.components and e.distilled is not True and e.key_in_file(original_key) is not None
    )
    names = [(entry.name, entry.key_in_file(original_key))]
    return names + [
        (e.name, e.repeated_key(original_key))
        for e in RELEASE_FILES
        if e.repeated_key(original_key) is not None and set(e.components) & set(present)
    ]


def is_release_dir(path) -> bool:
    """A directory in the one-file-per-part release layout (its transformer under ``diffusion_models/``)."""
    return any(path.glob("diffusion_models/*-transformer*.safetensors"))


def release_files_for(path, component: str, distilled: bool = False) -> list[tuple[ReleaseFile, object]]:
    """(entry, file path) of each release file holding keys of ``component``, where present; the dev transformer
    file still gives the connectors of a distilled run."""
    found = []
    for entry in RELEASE_FILES:
        if component not in entry.components:
            continue
        if entry.distilled is not None and component == "transformer" and entry.distilled != distilled:
            continue
        matches = sorted(path.glob(entry.pattern))
        if matches:
            found.append((entry, matches[0]))
    return found


# Components that go into the official single file (the upscaler never does).
SINGLE_FILE_COMPONENTS = ("transformer", "connectors", "video_vae", "audio_vae", "vocoder")


VAE_PARTS = ("encoder", "decoder")  # a VAE may be loaded as one half: what a command needs of it


def split_files_for(component: str, part: str | None = None) -> tuple[SplitFile, ...]:
    """The repackaged files of ``component`` (of its ``part`` only, for a VAE half)."""
    return tuple(f for f in SPLIT_FILES if f.component == component and (part is None or f.part in (None, part)))


def in_part(component: str, original_key: str, part: str | None) -> bool:
    """Is the key one of ``part``'s (a VAE half: its own tensors and the shared statistics)? Always, for no part."""
    return part is None or any(f.holds(original_key) for f in split_files_for(component, part))
