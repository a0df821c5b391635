"""The LTX-2 series end to end on its tiny variants -- ``tiny-2.3`` (gated attention, prompt AdaLN, 9-row
modulation, per-modality text projections, the 2.3 VAE decoder, the vocoder with bandwidth extension) and
``tiny-2.5`` (2.3 without the video feed-forward biases, with the keyframe position embedding, Gemma 4) -- and the
version checks that keep one version's files, caches and LoRAs away from another's."""

import json
import re
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import REFERENCE, tiny_config
from ltx2train import cli
from ltx2train.config import save_config
from ltx2train.inference.sample import sample
from ltx2train.models.key_maps import build_key_map
from ltx2train.models.loading import load_component
from ltx2train.lora.files import read_lora
from ltx2train.models.specs import load_variant
from ltx2train.models.version import VersionMismatchError, check_version, detect_checkpoint
from ltx2train.training import checkpoint as ckpt
from ltx2train.training.trainer import Trainer

PROMPT = "a red circle moves right with a rising tone"
QUIET = lambda _: None  # noqa: E731
SHORT = [
    "validation.at_start=false",
    "train.max_steps=4",
    "train.checkpoint_every=2",
    "train.keep_last=5",
    "validation.every=0",
    f"validation.prompts=[{PROMPT}]",
    "validation.steps=2",
    "train.log_every=1",
]
WORKSPACES = {"2.3": "tiny23_workspace", "2.5": "tiny25_workspace"}
VARIANTS = {"2.0": "tiny", "2.3": "tiny-2.3", "2.5": "tiny-2.5"}


def workspace(request, version):
    return request.getfixturevalue(WORKSPACES[version] if version != "2.0" else "tiny_workspace")


@pytest.fixture(scope="module", params=["2.3", "2.5"])
def run(request, tmp_path_factory):
    """(version, workspace, config, result): a 4-step LoRA run with checkpoints at 2 and 4 and a validation clip."""
    root = workspace(request, request.param)
    cfg = tiny_config(root, tmp_path_factory.mktemp(f"run{request.param}"), SHORT)
    return request.param, root, cfg, Trainer(cfg, log=QUIET).train()


def test_the_tiny_23_model_has_the_23_structure():
    """Every LTX-2.3 module kind of the 22B layout is in tiny-2.3 and nothing else: the reference key list with
    block indices dropped equals tiny-2.3's (transformer, connectors, vocoder, audio VAE); both ways through the key
    map."""
    reference = json.loads((REFERENCE / "ltx23_22b_original_keys.json").read_text())["ltx2.3-22b"]
    strip = lambda keys: {re.sub(r"\.\d+\.", ".N.", re.sub(r"\.\d+\.", ".N.", k)) for k in keys}  # noqa: E731
    spec = load_variant("tiny-2.3")
    for component, prefix in (
        ("transformer", "model.diffusion_model.transformer_blocks"),
        ("connectors", "model.diffusion_model.video_embeddings_connector"),
        ("vocoder", "vocoder."),
        ("audio_vae", "audio_vae."),
    ):
        module = spec.component(component).build(meta=True)
        key_map = build_key_map(component, module, spec.family)
        ours = set(key_map.to_diffusers)
        assert {key_map.to_original[key_map.to_diffusers[k]] for k in ours} == ours  # a bijection
        theirs = {k for k in reference if k.startswith(prefix)}
        assert strip(k for k in ours if k.startswith(prefix)) == strip(theirs), component
    gates = [
        k
        for k in build_key_map("transformer", spec.component("transformer").build(meta=True), "2.3").to_diffusers
        if "to_gate_logits" in k
    ]
    assert gates and all(k.endswith(("to_gate_logits.weight", "to_gate_logits.bias")) for k in gates)


def test_the_tiny_25_model_is_the_23_one_without_video_ff_biases_and_with_the_keyframe_embedding():
    def keys(variant):
        module = load_variant(variant).component("transformer").build(meta=True)
        return {k: tuple(v.shape) for k, v in module.state_dict().items()}

    for tiny, real in (("tiny-2.3", "ltx2.3-22b"), ("tiny-2.5", "ltx2.5")):
        assert load_variant(tiny).text_encoder == load_variant(real).text_encoder
    k23, k25 = keys("tiny-2.3"), keys("tiny-2.5")
    assert set(k25) - set(k23) == {"keyframes_abs_pos_embedding"}
    video_ff_biases = {f"transformer_blocks.{i}.ff.{m}.bias" for i in range(2) for m in ("net.0.proj", "net.2")}
    assert set(k23) - set(k25) == video_ff_biases
    assert load_variant("tiny-2.5").text_encoder == "gemma4_unified"


@pytest.mark.parametrize("version", ["2.0", "2.3", "2.5"])
def test_the_version_is_detected_from_the_files(request, tmp_path, capsys, version):
    from ltx2train.models.writing import save_single_file

    root, variant = workspace(request, version), VARIANTS[version]
    found = detect_checkpoint(root / "model")
    assert (found.variant, found.version) == (variant, f"LTX-{version}")
    # the official single file too: its keys, not its name or our metadata
    modules = {c: load_component(variant, c, root / "model") for c in ("transformer", "connectors")}
    single = save_single_file(modules, tmp_path / "custom.safetensors", version, metadata={})
    assert detect_checkpoint(single).variant == variant
    assert cli.main(["inspect", str(single)]) == 0
    assert f"LTX-{version} weights, variant {variant}: connectors, transformer" in capsys.readouterr().out


def test_written_files_carry_the_version_ltx_pipelines_reads(tiny23_workspace, tiny_workspace):
    """Lightricks' ltx-pipelines picks its LTX-2.3 defaults from the ``model_version`` header entry: it does so
    for the files we write."""
    from test_inference_pipeline import _ltx_pipelines_constants

    constants, name = _ltx_pipelines_constants(), "transformer.safetensors"
    assert constants.detect_params(str(tiny23_workspace / "model" / name)) == constants.LTX_2_3_PARAMS
    assert constants.detect_params(str(tiny_workspace / "model" / name)) == constants.LTX_2_PARAMS


def test_the_23_recipes_validate_as_ltx_pipelines_runs_23():
    from test_inference_pipeline import _ltx_pipelines_constants

    from ltx2train.config import load_config

    LTX_2_3_PARAMS = _ltx_pipelines_constants().LTX_2_3_PARAMS
    recipes = Path(__file__).resolve().parents[2] / "recipes"
    for name in ("ltx2.3_t2av_lora", "ltx2.3_t2av_full", "ltx2.3_i2av_lora", "ltx2.3_ic_lora", "ltx2.5_t2av_lora"):
        v = load_config(recipes / f"{name}.yaml").validation
        video, audio = LTX_2_3_PARAMS.video_guider_params, LTX_2_3_PARAMS.audio_guider_params
        assert v.stg_blocks == video.stg_blocks == audio.stg_blocks, name
        assert (v.steps, v.guidance_scale, v.audio_guidance_scale) == (
            LTX_2_3_PARAMS.num_inference_steps,
            video.cfg_scale,
            audio.cfg_scale,
        ), name


@pytest.mark.parametrize(
    "checkpoint_of, variant",
    [
        ("2.3", "tiny"),
        ("2.3", "ltx2-19b"),
        ("2.0", "tiny-2.3"),
        ("2.0", "ltx2.3-22b"),
        ("2.5", "tiny-2.3"),
        ("2.3", "tiny-2.5"),
        ("2.5", "ltx2.5"),
    ],
)
def test_a_checkpoint_of_another_version_is_refused_naming_both(request, tmp_path, capsys, checkpoint_of, variant):
    root = workspace(request, checkpoint_of)
    recipe = save_config(tiny_config(root, tmp_path / "run"), tmp_path / "recipe.yaml")
    found = VARIANTS[checkpoint_of]
    spec = load_variant(variant)
    for command in ("train", "prepare", "sample"):
        assert cli.main([command, str(recipe), f"model.variant={variant}"]) == 2, command
        err = capsys.readouterr().err
        assert (
            f"weights are LTX-{checkpoint_of} ({found}), but model.variant is {variant} "
            f"({spec.version}): set model.variant={found}" in err
        ), err
        assert "Traceback" not in err
    assert not (tmp_path / "run").exists()  # refused before any work


def test_the_pipeline_refuses_a_checkpoint_of_another_variant(tiny23_workspace, tiny25_workspace):
    from ltx2train.inference.av_pipeline import LTX2AudioVideoPipeline

    with pytest.raises(VersionMismatchError, match=r"weights are LTX-2.3 \(tiny-2.3\), but model.variant is tiny "):
        LTX2AudioVideoPipeline.from_pretrained(
            tiny23_workspace / "model", tiny23_workspace / "model" / "gemma", variant="tiny", device="cpu"
        )
    with pytest.raises(VersionMismatchError, match=r"is a Gemma 3 .* tiny-2.5 \(LTX-2.5\) reads Gemma 4"):
        LTX2AudioVideoPipeline.from_pretrained(
            tiny25_workspace / "model", tiny23_workspace / "model" / "gemma", device="cpu"
        )


def test_a_text_encoder_of_another_gemma_is_refused(tiny25_workspace, tiny23_workspace, tmp_path, capsys):
    recipe = save_config(
        tiny_config(tiny25_workspace, tmp_path / "run", [f"model.text_encoder={tiny23_workspace / 'model' / 'gemma'}"]),
        tmp_path / "recipe.yaml",
    )
    for command in ("train", "prepare", "sample"):
        assert cli.main([command, str(recipe)]) == 2
        err = capsys.readouterr().err
        assert "is a Gemma 3 (LTX-2, LTX-2.3) model, but model.variant tiny-2.5 (LTX-2.5) reads Gemma 4" in err, err


def test_a_file_of_another_size_is_named_with_what_differs(tiny23_workspace, tmp_path):
    spec = load_variant("tiny-2.3")
    model = tmp_path / "model"
    shutil.copytree(tiny23_workspace / "model", model)
    state = load_file(str(model / "transformer.safetensors"))
    state = {k: v for k, v in state.items() if ".transformer_blocks.1." not in k}  # one block fewer
    save_file(state, str(model / "transformer.safetensors"))
    with pytest.raises(
        VersionMismatchError,
        match=r"matches no shipped variant .* missing \(e\.g\. "
        r"model\.diffusion_model\.transformer_blocks\.1\..*closest shipped "
        r"variant is tiny-2.3 \(LTX-2.3\)",
    ):
        check_version(model, spec, ["transformer"])


@pytest.mark.parametrize("cache_of, variant", [("2.0", "2.3"), ("2.3", "2.5"), ("2.5", "2.3")])
def test_a_cache_of_another_version_is_refused_with_how_to_prepare(request, tmp_path, capsys, cache_of, variant):
    cache_dir = tiny_config(workspace(request, cache_of), tmp_path).data.cache_dir
    recipe = save_config(
        tiny_config(workspace(request, variant), tmp_path / "run", [f"data.cache_dir={cache_dir}"]),
        tmp_path / "recipe.yaml",
    )
    for command in ("train", "prepare"):
        assert cli.main([command, str(recipe)]) == 2
        err = capsys.readouterr().err
        assert (
            f"prepared for {VARIANTS[cache_of]} (LTX-{cache_of}), but the recipe's model.variant is "
            f"{VARIANTS[variant]} (LTX-{variant})"
        ) in err, err
        assert "--overwrite" in err
    manifest = json.loads((Path(cache_dir) / "manifest.json").read_text())
    assert (manifest["produced_by"]["variant"], manifest["produced_by"]["version"]) == (
        VARIANTS[cache_of],
        f"LTX-{cache_of}",
    )


@pytest.mark.parametrize("version", ["2.3", "2.5"])
def test_prepare_caches_both_text_projections(request, version):
    from ltx2train.data.cache import CachedDataset

    root = workspace(request, version)
    sample0 = CachedDataset(tiny_config(root, "unused").data.cache_dir)[0]
    connectors = load_variant(VARIANTS[version]).component("connectors").config
    assert sample0["text_video"].shape[-1] == connectors["video_hidden_dim"]
    assert sample0["text_audio"].shape[-1] == connectors["audio_hidden_dim"]
    assert sample0["video_latents"].shape[0] == 8 and sample0["audio_latents"].shape[0] == 2


def test_lora_trains_checkpoints_and_sample_reproduces_validation(run, tmp_path):
    version, _, cfg, result = run
    assert result.step == 4 and all(np.isfinite(loss) for _, loss in result.losses)
    lora = read_lora(result.checkpoint / ckpt.LORA_FILE)
    assert lora.metadata["base_variant"] == VARIANTS[version] and lora.metadata["family"] == version
    assert not [m for m in lora.modules if "gate_logits" in m]  # the default leaves the gates alone
    assert any(m.endswith("audio_attn1.to_q") for m in lora.modules)  # ... and trains the audio stream
    in_training = result.last_validation[0]
    assert in_training.sample_rate == 48000  # the vocoder's bandwidth extension
    paths, clips = sample(cfg, lora=result.checkpoint / ckpt.LORA_FILE, output_dir=tmp_path)
    assert np.array_equal(clips[0].video, in_training.video) and torch.equal(clips[0].audio, in_training.audio)
    with av.open(str(paths[0])) as container:
        assert container.streams.audio[0].rate == 48000
    _, base = sample(cfg, lora=None, output_dir=tmp_path / "base")
    assert not np.array_equal(base[0].video, in_training.video)


@pytest.mark.parametrize("method", ["lora", "full"])
@pytest.mark.parametrize("version", ["2.3", "2.5"])
def test_trained_connectors_reload_into_sample_like_validation(request, tmp_path, version, method):
    """train.trainable=[transformer, connectors] on 2.3+ connectors (gated, 8 layers in the real model, a text
    projection per modality before them, frozen): the checkpoint reproduces the validation clip in ``sample``."""
    root = workspace(request, version)
    extra = ["lora.alpha=null"] if method == "lora" else ["train.method=full", "optimizer.lr=1e-4"]
    cfg = tiny_config(
        root, tmp_path / "run", [*SHORT, *extra, "train.max_steps=2", "train.trainable=[transformer,connectors]"]
    )
    result = Trainer(cfg, log=QUIET).train()
    if method == "lora":
        assert any("embeddings_connector." in m for m in read_lora(result.checkpoint / ckpt.LORA_FILE).modules)
        _, clips = sample(cfg, lora=result.checkpoint / ckpt.LORA_FILE, output_dir=tmp_path / "sample")
    else:
        base = load_component(VARIANTS[version], "connectors", cfg.model.checkpoint)
        trained = load_component(VARIANTS[version], "connectors", result.checkpoint)
        changed = {
            n.split(".")[0] for (n, p), q in zip(base.named_parameters(), trained.parameters()) if not torch.equal(p, q)
        }
        assert changed == {"video_connector", "audio_connector"}
        _, clips = sample(cfg, lora=None, transformer=result.checkpoint, output_dir=tmp_path / "sample")
    in_training = result.last_validation[0]
    assert np.array_equal(clips[0].video, in_training.video) and torch.equal(clips[0].audio, in_training.audio)


def test_resume_continues_exactly(run, tmp_path):
    _, root, cfg, straight = run
    resumed_dir = tmp_path / "resumed"
    shutil.copytree(ckpt.checkpoint_dir(cfg.train.output_dir, 2), ckpt.checkpoint_dir(resumed_dir, 2))
    resumed = Trainer(tiny_config(root, resumed_dir, SHORT), log=QUIET).train()
    assert [s for s, _ in resumed.losses] == [3, 4] and resumed.losses == straight.losses[2:]
    a, b = (load_file(str(r.checkpoint / ckpt.LORA_FILE)) for r in (straight, resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("version", ["2.3", "2.5"])
def test_the_default_lora_trains_stably_and_audio_learns(request, tmp_path, version):
    """The default targets (attention q/k/v/out, gates untouched): 60 steps, nothing non-finite, the loss and the
    audio loss both fall, and the gates stay exactly the base model's."""
    root = workspace(request, version)
    cfg = tiny_config(
        root,
        tmp_path,
        [
            "validation.at_start=false",
            "validation.every=0",
            "validation.prompts=[]",
            "train.max_steps=60",
            "train.log_every=10",
            "train.checkpoint_every=60",
        ],
    )
    trainer = Trainer(cfg, log=QUIET)
    result = trainer.train()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "loss" in r]
    assert all(np.isfinite([r["loss"], r["video_loss"], r["audio_loss"], r["grad_norm"]]).all() for r in rows)
    assert rows[-1]["loss"] < rows[0]["loss"]
    first, last = (np.mean([r["audio_loss"] for r in part]) for part in (rows[:2], rows[-2:]))
    assert last < first
    base = load_component(VARIANTS[version], "transformer", cfg.model.checkpoint)
    gates = {n: p for n, p in trainer.model.named_parameters() if "to_gate_logits" in n}
    assert gates and all(
        "lora_" not in n and torch.equal(p, base.get_parameter(n.replace(".base_layer", ""))) for n, p in gates.items()
    )
    assert result.step == 60


def test_gate_logits_are_an_explicit_option(tiny23_workspace, tmp_path, capsys):
    cfg = tiny_config(
        tiny23_workspace,
        tmp_path / "gates",
        [
            "validation.at_start=false",
            "validation.every=0",
            "validation.prompts=[]",
            "train.max_steps=2",
            "lora.gate_logits=true",
            "optimizer.lr=1e-2",
        ],
    )
    result = Trainer(cfg, log=QUIET).train()
    lora = read_lora(result.checkpoint / ckpt.LORA_FILE)
    gated = [m for m in lora.modules if m.endswith("to_gate_logits")]
    transformer = load_variant("tiny-2.3").component("transformer").build(meta=True)
    assert len(gated) == sum(1 for n, _ in transformer.named_modules() if n.endswith("to_gate_logits"))
    assert all(torch.count_nonzero(lora.modules[m].up) for m in gated)  # trained, not left at zero
    recipe = save_config(cfg, tmp_path / "recipe.yaml")
    assert cli.main(["train", str(recipe), "lora.gate_logits=false", "lora.target_modules=[to_q,to_gate_logits]"]) == 2
    assert "set lora.gate_logits=true" in capsys.readouterr().err
    assert cli.main(["train", str(recipe), "model.variant=tiny"]) == 2
    assert "has no gated attention" in capsys.readouterr().err


def test_a_lora_with_nan_weights_is_refused(run, tmp_path):
    result = run[3]
    state = load_file(str(result.checkpoint / ckpt.LORA_FILE))
    key = next(k for k in state if k.endswith("lora_B.weight"))
    state[key][0, 0] = float("nan")
    save_file(state, str(tmp_path / "nan.safetensors"))
    with pytest.raises(ValueError, match=f"NaN or infinite values .*{re.escape(key)}"):
        read_lora(tmp_path / "nan.safetensors")


def test_two_stage_and_distilled_sampling(run, tmp_path, capsys):
    """``sample --two-stage`` (the version's x2 upscaler beside the checkpoint, a stage-2 LoRA) and
    ``--distilled-pipeline``, with the trained LoRA."""
    from test_inference_pipeline import _stage2_lora

    version, root, cfg, result = run
    from ltx2train.models.layout import upscaler_file

    assert (Path(cfg.model.checkpoint) / upscaler_file(version)).is_file()
    recipe = save_config(
        tiny_config(
            root,
            tmp_path / "run",
            ["validation.height=64", "validation.width=128", "validation.num_frames=9", "validation.steps=2"],
        ),
        tmp_path / "recipe.yaml",
    )
    stage2 = _stage2_lora(
        load_component(VARIANTS[version], "transformer", cfg.model.checkpoint), tmp_path / "s2.safetensors"
    )
    lora = str(result.checkpoint / ckpt.LORA_FILE)
    for flags in (["--two-stage", "--stage2-lora", str(stage2)], ["--distilled-pipeline"]):
        assert (
            cli.main(
                [
                    "sample",
                    str(recipe),
                    *flags,
                    "--lora",
                    lora,
                    "--prompt",
                    PROMPT,
                    "--output",
                    str(tmp_path / flags[0]),
                ]
            )
            == 0
        )
        path = Path(capsys.readouterr().out.strip().splitlines()[-1])
        with av.open(str(path)) as container:
            assert (container.streams.video[0].width, container.streams.video[0].height) == (128, 64)
            assert container.streams.audio[0].rate == 48000


# ------------------------------------------------------------------------------------------ LTX-2.5's keyframe mark
def test_25_training_marks_the_first_latent_frame_as_diffusers_dfr_pipeline_does(tiny25_workspace, tmp_path):
    """The reference for which tokens carry LTX-2.5's keyframe embedding: diffusers' ``LTX2DFRPipeline.prepare_latents``
    (the first latent frame marked, appended reference tokens not). Our training inputs mark the same tokens, the
    transformer's output with them equals its output under the DFR mask, and it differs from the unmarked forward."""
    from diffusers.pipelines.ltx2.pipeline_ltx2_dfr import LTX2DFRPipeline

    from conftest import transformer_inputs

    transformer = load_component("tiny-2.5", "transformer", tiny25_workspace / "model")
    vae = load_component("tiny-2.5", "video_vae", tiny25_workspace / "model")
    dfr = LTX2DFRPipeline(
        scheduler=None,
        vae=vae,
        audio_vae=None,
        text_encoder=None,
        tokenizer=None,
        connectors=None,
        transformer=transformer,
        vocoder=None,
    )
    kwargs = transformer_inputs(tiny25_workspace, tmp_path)
    ours = kwargs["video_keyframes_mask"]
    for reference in (None, torch.zeros(1, 8, 2, 1, 1)):
        *_, reference_mask, _ = dfr.prepare_latents(
            batch_size=1,
            num_channels_latents=8,
            height=64,
            width=64,
            num_frames=9,
            reference_latents=reference,
            generator=torch.Generator().manual_seed(0),
        )
        n = ours.shape[1]
        assert torch.equal(reference_mask[:, :n], ours) and not reference_mask[:, n:].any()
    with torch.no_grad():
        marked = transformer(**kwargs)[0]
        dfr_marked = transformer(**{**kwargs, "video_keyframes_mask": reference_mask[:, :n]})[0]
        unmarked = transformer(**{**kwargs, "video_keyframes_mask": None})[0]
    assert torch.equal(marked, dfr_marked) and not torch.allclose(marked, unmarked)


def test_25_validation_and_sample_mark_the_first_latent_frame(tiny25_workspace, tmp_path, monkeypatch):
    """The diffusers pipelines pass no keyframe mask; ours adds it at every denoising step, as ltx-core's inference
    does, so a sample is what training optimised for."""
    from ltx2train.inference import live_pipeline as pipeline

    seen, original = [], pipeline._call

    def spy(pipe, *args, **kwargs):
        handle = pipe.transformer.register_forward_pre_hook(
            lambda m, a, kw: seen.append(kw.get("video_keyframes_mask")), with_kwargs=True
        )
        try:
            return original(pipe, *args, **kwargs)
        finally:
            handle.remove()

    monkeypatch.setattr(pipeline, "_call", spy)
    sample(tiny_config(tiny25_workspace, tmp_path, ["validation.steps=2"]), lora=None, output_dir=tmp_path)
    assert seen and all(m is not None and m[:, :4].all() and not m[:, 4:].any() for m in seen)  # a 2x2 latent frame


@pytest.mark.slow
@pytest.mark.distributed  # launches 2 processes
@pytest.mark.parametrize("version", ["2.3", "2.5"])
def test_full_fine_tuning_under_fsdp2_on_two_processes(request, tmp_path, version):
    """Full fine-tuning, sharded over 2 processes (FSDP2, gloo): the same losses and weights as one process with
    the whole global batch; the export loads strictly as the version's transformer; the version's own parameters
    (2.3's attention gates, 2.5's keyframe embedding) are trained."""
    from test_backends import COMMON, _losses, _train

    root = workspace(request, version)
    full = ["train.method=full", "optimizer.lr=1e-3"]
    _train(root, tmp_path / "fsdp2", [*full, "distributed.backend=fsdp2"])
    one = tiny_config(root, tmp_path / "one", [*COMMON, *full, "data.batch_size=2"])
    Trainer(one, log=QUIET).train()
    assert [loss for _, loss in _losses(tmp_path / "fsdp2")] == pytest.approx(
        [loss for _, loss in _losses(tmp_path / "one")], rel=1e-5
    )
    variant = VARIANTS[version]
    sharded = load_component(variant, "transformer", ckpt.checkpoint_dir(tmp_path / "fsdp2", 4))  # strict
    single = load_component(variant, "transformer", ckpt.checkpoint_dir(tmp_path / "one", 4))
    base = load_component(variant, "transformer", one.model.checkpoint)
    for (name, param), ref in zip(sharded.named_parameters(), single.parameters()):
        torch.testing.assert_close(param, ref, rtol=1e-4, atol=1e-6, msg=name)
    own = "to_gate_logits" if version == "2.3" else "keyframes_abs_pos_embedding"
    changed = [n for n, p in sharded.named_parameters() if not torch.equal(p, base.get_parameter(n))]
    assert any(own in n for n in changed)


# ------------------------------------------------------------------------------------------ LTX-2.5's release layout
def _release_layout(variant: str) -> dict[str, dict[str, tuple[int, ...]]]:
    """Per release file, the keys and shapes our variant's modules give it (built on the meta device)."""
    from ltx2train.models.key_maps import original_keys_with_shapes
    from ltx2train.models.layout import release_names

    spec, files = load_variant(variant), {}
    for component, part in spec.components.items():
        module = part.build(meta=True)
        for key, shape in original_keys_with_shapes(build_key_map(component, module, spec.family), module).items():
            for name, key_in_file in release_names(component, key, present=spec.components):
                files.setdefault(name, {})[key_in_file] = tuple(shape)
    return files


def test_the_25_release_files_hold_the_published_keys():
    """LTX-2.5 ships a file per part, each with its own key prefixes: ours, mapped from the diffusers modules of
    ``ltx2.5``, are exactly the published files' keys and shapes (tests/data/reference/ltx25_22b_official_files.json),
    and every one of those keys maps back to a diffusers parameter."""
    published = json.loads((REFERENCE / "ltx25_22b_official_files.json").read_text())
    ours = _release_layout("ltx2.5")
    assert sorted(ours) == sorted(published)
    for name, keys in published.items():
        assert ours[name] == {k: tuple(v) for k, v in keys.items()}, name


def test_a_25_release_directory_loads_prepares_and_trains(tiny25_workspace, tmp_path):
    from ltx2train.data.prepare import prepare
    from ltx2train.models.writing import save_release

    split = tiny25_workspace / "model"
    modules = {c: load_component("tiny-2.5", c, split) for c in load_variant("tiny-2.5").components}
    release = tmp_path / "LTX-2.5"
    written = save_release(modules, release, "2.5", variant_name="tiny-2.5")
    assert {p.relative_to(release).as_posix() for p in written} == set(_release_layout("tiny-2.5"))
    assert detect_checkpoint(release).variant == "tiny-2.5"
    from ltx2train.file_report import inspect_file

    for path in written:  # `inspect FILE` knows each file: its parts, complete, and (by its header) the version
        report = inspect_file(path)
        assert report["version"] == "LTX-2.5" and not report["extra_keys"], path
        assert all(not c["missing"] and c["file_layout"].startswith("release file") for c in report["components"])
    for component, module in modules.items():
        again = load_component("tiny-2.5", component, release)  # strict: every key, shape and file
        assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), module.state_dict().values()))
    shutil.copytree(split / "gemma", release / "gemma")
    cfg = tiny_config(
        tiny25_workspace,
        tmp_path / "run",
        [
            f"model.checkpoint={release}",
            "validation.prompts=[]",
            f"model.text_encoder={release / 'gemma'}",
            f"data.cache_dir={tmp_path / 'cache'}",
            "train.max_steps=2",
            "validation.every=0",
            "validation.at_start=false",
        ],
    )
    report = prepare(cfg)
    assert len(report.encoded) == 6
    ours, theirs = (
        json.loads((Path(d) / "manifest.json").read_text())["produced_by"]
        for d in (cfg.data.cache_dir, tiny_config(tiny25_workspace, tmp_path).data.cache_dir)
    )
    parts = ("video_vae_encoder", "audio_vae_encoder", "connectors")
    assert {k: ours[k] for k in parts} == {k: theirs[k] for k in parts}  # the same weights, whatever the layout
    assert Trainer(cfg, log=QUIET).train().step == 2


@pytest.mark.slow
@pytest.mark.distributed  # launches 2 processes
@pytest.mark.parametrize(
    "method, backend",
    [
        ("lora", "ddp"),
        ("lora", "fsdp2"),
        ("lora", "zero2"),
        ("lora", "zero3_offload"),
        ("full", "ddp"),
        ("full", "zero2"),
    ],
)
@pytest.mark.parametrize("version", ["2.3", "2.5"])
def test_each_backend_on_two_processes(request, tmp_path, version, method, backend):
    """2 processes (gloo) under ddp, FSDP2, DeepSpeed ZeRO-2 and ZeRO-3 with optimizer offload train what one process
    with the whole global batch trains (losses to 1e-5, the export to float rounding)."""
    from test_backends import BACKENDS, COMMON, _losses, _train

    root = workspace(request, version)
    train = [f"train.method={method}", "optimizer.lr=1e-3" if method == "full" else "optimizer.lr=2e-3"]
    _train(root, tmp_path / backend, [*train, *BACKENDS[backend]])
    Trainer(tiny_config(root, tmp_path / "one", [*COMMON, *train, "data.batch_size=2"]), log=QUIET).train()
    assert [loss for _, loss in _losses(tmp_path / backend)] == pytest.approx(
        [loss for _, loss in _losses(tmp_path / "one")], rel=1e-5
    )
    name = ckpt.LORA_FILE if method == "lora" else "transformer.safetensors"
    a, b = (load_file(str(ckpt.checkpoint_dir(tmp_path / d, 4) / name)) for d in (backend, "one"))
    assert a.keys() == b.keys()
    # AdamW divides each gradient element by its own running norm, so an element whose gradient is near zero carries
    # the order of the float reductions (2 x 1 vs 1 x 2 samples) into its update: measured up to 6.6e-6 on one
    # element of 2.5's LoRA (AMD EPYC; within 1e-6 elsewhere). The losses (to 1e-5) catch a wrong split or average.
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("version", ["2.3", "2.5"])
def test_a_lora_over_an_fp8_base_with_block_swap_trains(request, tmp_path, version):
    """The memory levers on 2.3 and 2.5: the frozen transformer stored in FP8, the last block swapped from host
    memory, checkpointing; the LoRA trains (finite losses, non-zero update) and its base stays FP8."""
    root = workspace(request, version)
    cfg = tiny_config(
        root,
        tmp_path,
        [
            "validation.at_start=false",
            "validation.every=0",
            "validation.prompts=[]",
            "train.max_steps=3",
            "train.gradient_checkpointing=true",
            "memory.fp8_frozen=[transformer,connectors]",
            "memory.block_swap=1",
            "model.dtype=bfloat16",
        ],
    )
    trainer = Trainer(cfg, log=QUIET)
    result = trainer.train()
    assert result.step == 3 and all(np.isfinite(loss) for _, loss in result.losses)
    stored = {p.dtype for n, p in trainer.model.named_parameters() if n.endswith("attn1.to_q.base_layer.weight")}
    assert stored == {torch.float8_e4m3fn}
    lora = read_lora(result.checkpoint / ckpt.LORA_FILE)
    assert any(torch.count_nonzero(w.up) for w in lora.modules.values())


def test_checking_a_version_leaves_the_random_state_alone(tiny23_workspace):
    """The check builds the variant's modules on the meta device; a run seeds its RNG before it, so the check must not
    draw from it (a LoRA's initial weights would depend on whether the layouts were already cached: they did)."""
    from ltx2train.models import version

    version._layout.cache_clear()
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    check_version(tiny23_workspace / "model", load_variant("tiny-2.3"), ["transformer", "connectors", "video_vae"])
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("version", ["2.3", "2.5"])
def test_a_lora_merges_into_the_versions_layout(request, tmp_path, version):
    """``export --merge``: into LTX-2.3's repackaged directory and LTX-2.5's release layout, the transformer file
    merged (W + B·A), every other file copied through; the merged model is the base with the LoRA applied."""
    from conftest import train_lora, transformer_inputs, transformer_outputs
    from ltx2train.lora.adapters import apply_lora
    from ltx2train.models.writing import save_release

    root, variant = workspace(request, version), VARIANTS[version]
    base_dir, transformer_file = root / "model", "transformer.safetensors"
    if version == "2.5":
        modules = {c: load_component(variant, c, base_dir) for c in load_variant(variant).components}
        base_dir, transformer_file = (
            tmp_path / "LTX-2.5",
            "diffusion_models/ltx-2.5-22b-dev-transformer-bf16.safetensors",
        )
        save_release(modules, base_dir, "2.5")
    _, checkpoint = train_lora(root, tmp_path / "lora")
    lora = checkpoint / ckpt.LORA_FILE
    merged = tmp_path / "merged"
    assert cli.main(["export", str(lora), "--merge", str(base_dir), "--output", str(merged)]) == 0
    written = {p.relative_to(merged).as_posix() for p in merged.rglob("*.safetensors")}
    assert transformer_file in written
    for name in written - {transformer_file}:
        assert (merged / name).read_bytes() == (base_dir / name).read_bytes(), name
    kwargs = transformer_inputs(root, tmp_path)
    ours = transformer_outputs(load_component(variant, "transformer", merged), kwargs)
    base = load_component(variant, "transformer", base_dir)
    apply_lora(base, lora, family=version)
    for got, expected in zip(ours, transformer_outputs(base, kwargs)):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
