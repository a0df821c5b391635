"""Training strategies (strategy.name: t2av | t2v | i2av | ic_lora | a2v | v2a) on the tiny model, from a cache
with first-frame and reference latents and the empty prompt: conditioning tokens carry no noise and get exactly
zero loss gradient, the audio of a video-only step reaches nothing, caption dropout swaps in the empty prompt
per sample, and every strategy trains (LoRA and full fine-tuning) and its checkpoint reloads."""

import json

import pytest
import torch

from conftest import tiny_config
from ltx2train.data.cache import CachedDataset
from ltx2train.models.loading import load_component
from ltx2train.models.text_encoder import ProjectedText, connect_text
from ltx2train.training.methods import build_method
from ltx2train.training.strategies import PRESETS, build_strategy, check_strategy, pack_audio, pack_video

EXTRAS = [
    "data.reference_video_column=ref",
    "data.extras=[first_frame,reference,empty_prompt]",
    "data.reference_downscale=2",
]


def _prepare_extras(workspace, root):
    """The workspace's clips, each with the next one as its reference video, prepared with every extra."""
    from ltx2train.data.prepare import prepare

    data = workspace / "data"
    rows = [json.loads(line) for line in (data / "metadata.jsonl").read_text().splitlines()][:4]
    for i, row in enumerate(rows):
        row["video"], row["ref"] = str(data / row["video"]), str(data / rows[(i + 1) % len(rows)]["video"])
    (root / "meta.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    overrides = [
        f"data.metadata={root / 'meta.jsonl'}",
        f"data.cache_dir={root / 'cache'}",
        *EXTRAS,
        "validation.prompts=[]",
    ]  # i2av and ic_lora validate only with a condition per prompt
    report = prepare(tiny_config(workspace, root / "unused", overrides))
    assert len(report.encoded) == 4
    return root, overrides


@pytest.fixture(scope="module")
def extras(tiny_workspace, tmp_path_factory):
    """The tiny LTX-2 workspace's clips prepared with every extra."""
    return _prepare_extras(tiny_workspace, tmp_path_factory.mktemp("strategies"))


def _setup(tiny_workspace, tmp_path, overrides, strategy_overrides=()):
    cfg = tiny_config(tiny_workspace, tmp_path / "run", [*overrides, *strategy_overrides])
    dataset = CachedDataset(cfg.data.cache_dir)
    transformer = load_component("tiny", "transformer", cfg.model.checkpoint)
    connectors = load_component("tiny", "connectors", cfg.model.checkpoint)
    strategy = build_strategy(cfg, dataset, transformer)
    build_method(cfg, load_variant_tiny(), frozen=strategy.frozen_modules).apply(transformer, print)
    with torch.no_grad():  # every adapter non-zero: gradients reach everything they can
        for name, p in transformer.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)

    def context(batch):
        with torch.no_grad():
            return connect_text(
                connectors, ProjectedText(batch["text_video"], batch.get("text_audio"), batch["text_attention_mask"])
            )

    return cfg, dataset, transformer, strategy, context


def load_variant_tiny():
    from ltx2train.models.specs import load_variant

    return load_variant("tiny")


def _step(transformer, strategy, inputs):
    """Forward + loss + backward; the predictions with their loss gradients."""
    video_pred, audio_pred = transformer(**inputs.model_kwargs)
    for pred in (video_pred, audio_pred):
        if pred.requires_grad:  # audio none: nothing trainable reaches the audio prediction
            pred.retain_grad()
    loss, parts = strategy.loss(video_pred, audio_pred, inputs)
    loss.backward()
    return video_pred, audio_pred, loss, parts


def _generators(n, seed=0):
    return [torch.Generator().manual_seed(seed * 100 + i) for i in range(n)]


@pytest.mark.parametrize("name", ["i2av", "ic_lora", "a2v", "v2a"])
def test_conditioning_tokens_carry_no_noise_and_get_no_loss_gradient(extras, tiny_workspace, tmp_path, name):
    root, overrides = extras
    cfg, dataset, transformer, strategy, context = _setup(
        tiny_workspace, tmp_path, overrides, [f"strategy.name={name}", "strategy.first_frame_probability=1.0"]
    )
    batch = dataset.collate([dataset[0], dataset[1]])
    inputs = strategy.inputs(batch, context, generator=_generators(2))
    kw = inputs.model_kwargs
    video_pred, audio_pred, loss, parts = _step(transformer, strategy, inputs)
    assert torch.isfinite(loss) and loss > 0
    video, audio = pack_video(batch["video_latents"]), pack_audio(batch["audio_latents"])
    hw = video.shape[1] // batch["video_latents"].shape[2]  # tokens per latent frame
    n = video.shape[1]
    if name == "i2av":  # the first latent frame: the image encoded alone, clean, timestep 0, no loss gradient
        image = pack_video(batch["first_frame_latents"])
        assert torch.equal(kw["hidden_states"][:, :hw], image)
        assert torch.equal(image, video[:, :hw])  # the causal VAE: the frame alone encodes as the clip's frame 0
        other = strategy.inputs(
            {**batch, "first_frame_latents": batch["first_frame_latents"] + 1}, context, generator=_generators(2)
        ).model_kwargs  # the condition is the cached image's
        assert torch.equal(other["hidden_states"][:, :hw], image + 1)
        assert torch.equal(other["hidden_states"][:, hw:], kw["hidden_states"][:, hw:])
        assert (kw["timestep"][:, :hw] == 0).all() and (kw["timestep"][:, hw:] > 0).all()
        assert (video_pred.grad[:, :hw] == 0).all() and (video_pred.grad[:, hw:] != 0).any()
    if name == "ic_lora":  # reference tokens appended, clean, at timestep 0, sliced off the prediction
        reference = pack_video(batch["reference_latents"])
        assert kw["hidden_states"].shape[1] == n + reference.shape[1] and video_pred.shape[1] == n + reference.shape[1]
        assert torch.equal(kw["hidden_states"][:, n:], reference) and (kw["timestep"][:, n:] == 0).all()
        assert (video_pred.grad[:, n:] == 0).all() and (video_pred.grad[:, :n] != 0).any()
        coords = kw["video_coords"]  # reference positions scaled by 2: its grid spans the target's
        assert coords.shape[2] == n + reference.shape[1]
        assert coords[:, 1:, n:].amax() == coords[:, 1:, :n].amax()
        assert kw["isolate_modalities"] and kw["audio_hidden_states"].shape[1] == 1  # ic_lora: audio not run
    if name == "a2v":  # the whole audio given: clean, timestep 0, in no loss
        assert torch.equal(kw["audio_hidden_states"], audio) and (kw["audio_timestep"] == 0).all()
        assert (audio_pred.grad == 0).all() and parts["audio_loss"] == 0 and (video_pred.grad != 0).any()
    if name == "v2a":
        assert torch.equal(kw["hidden_states"], video) and (kw["timestep"] == 0).all()
        assert (video_pred.grad == 0).all() and parts["video_loss"] == 0 and (audio_pred.grad != 0).any()


def test_t2v_runs_no_audio_and_puts_no_adapter_on_the_audio_branch(extras, tiny_workspace, tmp_path):
    root, overrides = extras
    cfg, dataset, transformer, strategy, context = _setup(tiny_workspace, tmp_path, overrides, ["strategy.name=t2v"])
    adapted = {n.rsplit(".lora_A", 1)[0] for n, _ in transformer.named_parameters() if ".lora_A." in n}
    assert adapted and not any("audio" in n for n in adapted)  # neither audio nor audio-video attention
    assert any(".attn1." in n for n in adapted) and any(".attn2." in n for n in adapted)
    batch = dataset.collate([dataset[0]])
    inputs = strategy.inputs(batch, context, generator=_generators(1))
    kw = inputs.model_kwargs
    _step(transformer, strategy, inputs)  # every adapter gets a gradient (DDP requires it)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in transformer.parameters() if p.requires_grad)
    assert kw["isolate_modalities"] and kw["audio_hidden_states"].shape[1] == 1
    transformer.eval()
    with torch.no_grad():  # what stands in for the audio reaches nothing of the video
        video_a, _ = transformer(**kw)
        video_b, _ = transformer(**{**kw, "audio_hidden_states": torch.randn_like(kw["audio_hidden_states"])})
    assert torch.equal(video_a, video_b)
    # full fine-tuning under t2v: the audio branch frozen, everything else trained
    full = load_component("tiny", "transformer", cfg.model.checkpoint)
    build_method(
        tiny_config(tiny_workspace, tmp_path / "f", [*overrides, "train.method=full"]),
        load_variant_tiny(),
        frozen=strategy.frozen_modules,
    ).apply(full, print)
    frozen = {n for n, p in full.named_parameters() if not p.requires_grad}
    assert frozen and all("audio" in n or "_a2v_" in n or n.startswith("av_cross_attn_") for n in frozen)
    assert full.transformer_blocks[0].attn1.to_q.weight.requires_grad
    full.train()
    inputs = strategy.inputs(batch, context, generator=_generators(1))
    _step(full, strategy, inputs)  # what is trained all gets a gradient, what gets none is frozen
    assert all((p.grad is not None) == p.requires_grad for p in full.parameters())


def test_caption_dropout_swaps_in_the_empty_prompt_per_sample(extras, tiny_workspace, tmp_path):
    root, overrides = extras
    cfg, dataset, transformer, strategy, _ = _setup(
        tiny_workspace, tmp_path, overrides, ["strategy.caption_dropout=0.5"]
    )
    empty = dataset.empty_prompt()
    batch = dataset.collate([dataset[i] for i in range(4)])
    seen = []

    def context(b):
        seen.append(b)
        return connect_text(
            load_component("tiny", "connectors", cfg.model.checkpoint),
            ProjectedText(b["text_video"], None, b["text_attention_mask"]),
        )

    dropped_counts = set()
    for seed in range(6):
        strategy.inputs(batch, context, generator=_generators(4, seed))
        b = seen[-1]
        length = b["text_attention_mask"].shape[1]
        dropped = [
            torch.equal(b["text_video"][i, -empty["text_video"].shape[0] :], empty["text_video"])
            and b["text_attention_mask"][i].sum() == empty["text_attention_mask"].sum()
            for i in range(4)
        ]
        for i, d in enumerate(dropped):
            if not d:  # kept: the sample's own caption, left-padded
                own = batch["text_video"][i]
                assert torch.equal(b["text_video"][i, length - own.shape[0] :], own)
        dropped_counts.add(sum(dropped))
        again = strategy.inputs(batch, context, generator=_generators(4, seed))  # keyed by the generators
        assert torch.equal(seen[-1]["text_video"], b["text_video"]) and again is not None
    assert len(dropped_counts) > 1 and max(dropped_counts) > 0
    # the validation loss (fixed sigma) never drops captions
    strategy.inputs(batch, context, generator=torch.Generator().manual_seed(0), sigma=torch.full((4,), 0.5))
    assert seen[-1] is batch


def test_independent_sigmas_and_the_t2av_draws_unchanged(extras, tiny_workspace, tmp_path):
    root, overrides = extras
    *_, shared, context = _setup(tiny_workspace, tmp_path, overrides)
    cfg, dataset, _, independent, _ = _setup(tiny_workspace, tmp_path, overrides, ["strategy.independent_sigma=true"])
    batch = dataset.collate([dataset[0], dataset[1]])
    a = shared.inputs(batch, context, generator=_generators(2)).model_kwargs
    b = independent.inputs(batch, context, generator=_generators(2)).model_kwargs
    assert torch.equal(a["audio_timestep"], a["timestep"][:, 0]) and torch.equal(a["timestep"], b["timestep"])
    assert not torch.equal(b["audio_timestep"], b["timestep"][:, 0])
    assert torch.equal(a["hidden_states"], b["hidden_states"])  # the video draws are the same


def test_strategy_needs_are_checked_before_weights_load(extras, tiny_workspace, tmp_path):
    from ltx2train.config import ConfigError, load_config
    from ltx2train.demo import RECIPE

    plain = CachedDataset(tiny_config(tiny_workspace, tmp_path / "r").data.cache_dir).settings
    with pytest.raises(ValueError, match="needs reference latents.*data.extras including reference"):
        check_strategy(
            tiny_config(tiny_workspace, tmp_path / "r", ["strategy.name=ic_lora", *EXTRAS, "validation.prompts=[]"]),
            plain,
        )
    no_audio = {**plain, "with_audio": False}
    with pytest.raises(ValueError, match="audio given.*with_audio=false.*strategy.audio=none"):
        check_strategy(
            tiny_config(tiny_workspace, tmp_path / "r", ["strategy.name=a2v", "validation.prompts=[]"]), no_audio
        )
    check_strategy(tiny_config(tiny_workspace, tmp_path / "r", ["strategy.name=t2v"]), no_audio)  # video only: fine
    for bad, message in (
        (["strategy.name=i2v"], "strategy.name.*i2av"),
        (["strategy.caption_dropout=0.1"], "caption_dropout.*empty_prompt to data.extras"),
        (["strategy.name=ic_lora"], "ic_lora: needs the reference"),
        (["strategy.audio=silent"], "strategy.audio"),
        (["strategy.first_frame_probability=2"], "first_frame_probability: must be in"),
        (["strategy.name=i2av"], "validation.images: strategy.name=i2av .* one per prompt"),
        (["validation.images=[a.png]"], "validation.images: one per prompt \\(2 prompt"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_config(RECIPE, [f"model.checkpoint={tmp_path}", *bad])


@pytest.mark.parametrize("method", ["lora", "full"])
def test_every_strategy_trains_and_its_checkpoint_reloads(extras, tiny_workspace, tmp_path, method):
    _train_every_strategy(tiny_workspace, extras[1], tmp_path, method)


@pytest.mark.parametrize("version", ["2.3", "2.5"])
@pytest.mark.parametrize("method", ["lora", "full"])
def test_every_strategy_trains_on_every_version(request, tmp_path, method, version):
    """Every mode, LoRA and full fine-tuning, on the tiny LTX-2.3 and LTX-2.5 (the support matrix's cells)."""
    workspace = request.getfixturevalue({"2.3": "tiny23_workspace", "2.5": "tiny25_workspace"}[version])
    (tmp_path / "extras").mkdir()
    _, overrides = _prepare_extras(workspace, tmp_path / "extras")
    _train_every_strategy(workspace, overrides, tmp_path, method)


def _train_every_strategy(workspace, overrides, tmp_path, method):
    """Each strategy trains 3 steps (finite losses) and its checkpoint reloads: a LoRA with adapters on the audio
    stream exactly when audio runs, a full fine-tune that changed the video stream and left a frozen audio branch."""
    from ltx2train.lora.adapters import apply_lora
    from ltx2train.models.specs import load_variant
    from ltx2train.training import checkpoint as ckpt
    from ltx2train.training.trainer import Trainer

    for name in PRESETS:
        out = tmp_path / f"{name}_{method}"
        cfg = tiny_config(
            workspace,
            out,
            [
                *overrides,
                f"strategy.name={name}",
                f"train.method={method}",
                "train.max_steps=3",
                "train.log_every=1",
                "validation.at_start=false",
                "validation.prompts=[]",
                "validation.loss_sigmas=[0.5]",
                "strategy.caption_dropout=0.3",
                "optimizer.warmup_steps=0",
                "optimizer.lr=1e-3",
            ],
        )
        variant = cfg.model.variant
        result = Trainer(cfg, log=lambda _: None).train()
        assert result.step == 3 and all(torch.isfinite(torch.tensor(loss)) for _, loss in result.losses), name
        checkpoint = ckpt.checkpoint_dir(out, 3)
        if method == "lora":
            reloaded = load_component(variant, "transformer", cfg.model.checkpoint)
            counts = apply_lora(reloaded, checkpoint / "lora.safetensors", family=load_variant(variant).family)
            assert counts["transformer"] > 0, name
            audio = [n for n, _ in reloaded.named_parameters() if "lora_" in n and ".audio_attn1." in n]
            assert bool(audio) == (PRESETS[name].audio != "none"), name
        else:
            trained = load_component(variant, "transformer", checkpoint)  # strict: every key
            base = load_component(variant, "transformer", cfg.model.checkpoint)
            changed = {n for (n, p), q in zip(trained.named_parameters(), base.parameters()) if not torch.equal(p, q)}
            assert any(".attn1." in n for n in changed), name
            if PRESETS[name].audio == "none":  # frozen: bit-identical to the base
                assert not any(".audio_attn1." in n for n in changed), name


@pytest.mark.parametrize("name", ["i2av", "ic_lora", "a2v", "v2a"])
def test_conditioned_validation_and_sample_reproduce_each_other(extras, tiny_workspace, tmp_path, name):
    """i2av validates from an image, ic_lora from a reference video (LTX2InContextPipeline), a2v from a given
    audio and v2a from a given video (LTX2Pipeline with the given modality clean at timestep 0); ``sample``
    with the checkpoint's LoRA and the same condition reproduces the in-training clip bit for bit, and the
    condition matters (another one gives another clip)."""
    import numpy as np
    from PIL import Image

    from ltx2train.data.media import read_video_frames
    from ltx2train.inference.sample import sample
    from ltx2train.training.trainer import Trainer

    root, overrides = extras
    clips = sorted((tiny_workspace / "data" / "clips").glob("*.mp4"))
    first, other = (read_video_frames(c, 1, 24.0)[0].numpy() for c in clips[:2])
    Image.fromarray(first).save(tmp_path / "first.png")
    Image.fromarray(other).save(tmp_path / "other.png")
    condition = {
        "i2av": ("validation.images", tmp_path / "first.png", tmp_path / "other.png"),
        "ic_lora": ("validation.reference_videos", clips[0], clips[1]),
        "a2v": ("validation.audios", clips[0], clips[1]),
        "v2a": ("validation.videos", clips[0], clips[1]),
    }[name]
    cfg = tiny_config(
        tiny_workspace,
        tmp_path / "run",
        [
            *overrides,
            f"strategy.name={name}",
            "train.max_steps=2",
            "validation.at_start=false",
            "validation.prompts=[a red circle moves right]",
            f"{condition[0]}=[{condition[1]}]",
            "validation.steps=2",
            "validation.height=64",
            "validation.width=64",
            "validation.num_frames=9",
            "validation.loss_sigmas=[]",
            "optimizer.warmup_steps=0",
            "optimizer.lr=1e-2",
            "lora.init_from=null",
        ],
    )
    result = Trainer(cfg, log=lambda _: None).train()
    in_training = result.last_validation[0]
    key = {"i2av": "image", "ic_lora": "reference_video", "a2v": "audio", "v2a": "video"}[name]
    lora = result.checkpoint / "lora.safetensors"
    _, again = sample(cfg, lora=lora, output_dir=tmp_path / "s", **{key: str(condition[1])})
    assert np.array_equal(again[0].video, in_training.video) and torch.equal(again[0].audio, in_training.audio)
    _, changed = sample(cfg, lora=lora, output_dir=tmp_path / "o", **{key: str(condition[2])})
    assert not np.array_equal(changed[0].video, in_training.video)
    if name in ("a2v", "v2a"):  # the generated modality follows the given one, which the clip carries as given
        import dataclasses

        generated = (lambda c: c.video) if name == "a2v" else (lambda c: c.audio.numpy())  # noqa: E731
        given = (lambda c: c.audio.numpy()) if name == "a2v" else (lambda c: c.video)  # noqa: E731
        assert not np.array_equal(generated(changed[0]), generated(in_training))
        assert not np.array_equal(given(changed[0]), given(in_training))
        free = dataclasses.replace(cfg, validation=dataclasses.replace(cfg.validation, audios=[], videos=[]))
        _, alone = sample(free, lora=lora, output_dir=tmp_path / "t")  # nothing given: both generated
        assert not np.array_equal(generated(alone[0]), generated(in_training))


def test_a_given_modality_reaches_the_transformer_clean_at_timestep_zero(extras, tiny_workspace, tmp_path):
    from ltx2train.inference.given import given_modality

    root, overrides = extras
    cfg, dataset, transformer, strategy, context = _setup(tiny_workspace, tmp_path, overrides)
    batch = dataset.collate([dataset[0]])
    kw = strategy.inputs(batch, context, generator=_generators(1)).model_kwargs
    audio, video = pack_audio(batch["audio_latents"]), pack_video(batch["video_latents"])
    seen = []
    for given in ({"audio": audio}, {"video": video}):
        with given_modality(transformer, **given):
            handle = transformer.register_forward_pre_hook(lambda m, a, k: seen.append(dict(k)), with_kwargs=True)
            with torch.no_grad():
                transformer(
                    **{
                        **kw,
                        "hidden_states": torch.cat([kw["hidden_states"]] * 2),  # a CFG batch
                        **{
                            k: torch.cat([kw[k]] * 2)
                            for k in (
                                "audio_hidden_states",
                                "encoder_hidden_states",
                                "audio_encoder_hidden_states",
                                "timestep",
                                "audio_timestep",
                                "sigma",
                                "audio_sigma",
                            )
                        },
                    }
                )
            handle.remove()
    a2v, v2a = seen
    assert torch.equal(a2v["audio_hidden_states"], torch.cat([audio] * 2)) and (a2v["audio_timestep"] == 0).all()
    assert (a2v["audio_sigma"] == 0).all() and torch.equal(a2v["timestep"], torch.cat([kw["timestep"]] * 2))
    assert torch.equal(v2a["hidden_states"], torch.cat([video] * 2)) and (v2a["timestep"] == 0).all()
    assert (v2a["sigma"] == 0).all() and torch.equal(v2a["audio_timestep"], torch.cat([kw["audio_timestep"]] * 2))
    assert not transformer._forward_pre_hooks  # the hook is gone after the block
