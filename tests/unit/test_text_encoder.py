"""Gemma 3 text encoding with a tiny offline Gemma: shapes, padding, connectors."""

import pytest
import torch

from ltx2train.models.loading import load_component
from ltx2train.models.text_encoder import apply_connectors, load_text_encoder
from ltx2train.models.tiny import build_tiny_gemma, build_tiny_tokenizer, write_tiny_checkpoint

PROMPTS = ["a red circle moving left with a high tone", "blue square"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture(scope="module")
def encoder(tiny_dir):
    return load_text_encoder(tiny_dir / "gemma", dtype=torch.float32, max_sequence_length=16)


def test_shapes_and_left_padding(encoder):
    emb = encoder.encode(PROMPTS)
    hidden = encoder.model.config.text_config.hidden_size
    assert emb.hidden_states.shape == (2, 16, hidden * encoder.num_stacked_layers)
    lengths = emb.attention_mask.sum(-1).tolist()
    assert lengths == [10, 3]  # <bos> + words
    assert emb.attention_mask[1, :13].eq(0).all() and emb.attention_mask[1, 13:].eq(1).all()


def test_padding_does_not_change_real_tokens(encoder):
    batch = encoder.encode(PROMPTS)
    for i, prompt in enumerate(PROMPTS):
        for length in (16, 24):
            alone = encoder.encode([prompt], max_sequence_length=length)
            n = int(alone.attention_mask.sum())
            torch.testing.assert_close(alone.hidden_states[0, -n:], batch.hidden_states[i, -n:], rtol=1e-4, atol=1e-5)


def test_context_through_connectors(encoder, tiny_dir):
    connectors = load_component("tiny", "connectors", tiny_dir)
    batch = apply_connectors(connectors, encoder.encode(PROMPTS))
    cfg = connectors.config
    assert batch.video.shape == (
        2,
        16,
        cfg.video_connector_num_attention_heads * cfg.video_connector_attention_head_dim,
    )
    assert batch.audio.shape == (
        2,
        16,
        cfg.audio_connector_num_attention_heads * cfg.audio_connector_attention_head_dim,
    )
    # each prompt's context is independent of what it was batched with
    for i, prompt in enumerate(PROMPTS):
        alone = apply_connectors(connectors, encoder.encode([prompt]))
        torch.testing.assert_close(alone.video[0], batch.video[i], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(alone.audio[0], batch.audio[i], rtol=1e-4, atol=1e-5)
    # and it depends on the words
    assert not torch.allclose(batch.video[0], batch.video[1])


def test_text_only_gemma_gives_same_hidden_states(tmp_path, encoder):
    full = build_tiny_gemma(hidden_size=32, num_layers=2, seed=0)
    text_dir = tmp_path / "gemma_text"
    full.model.language_model.save_pretrained(text_dir, safe_serialization=True)
    build_tiny_tokenizer().save_pretrained(text_dir)
    text_only = load_text_encoder(text_dir, dtype=torch.float32, max_sequence_length=16)
    torch.testing.assert_close(text_only.encode(PROMPTS).hidden_states, encoder.encode(PROMPTS).hidden_states)


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_text_encoder(tmp_path)


@pytest.mark.parametrize("per_modality", [False, True], ids=["ltx2.0", "ltx2.3"])
def test_project_then_connect_equals_the_connectors(per_modality):
    """The cache stores the frozen projection; the step runs the connectors: together exactly the module."""
    from diffusers.pipelines.ltx2 import LTX2TextConnectors

    from ltx2train.models.text_encoder import TextEmbeddings, apply_connectors, connect_text, project_text

    torch.manual_seed(0)
    extra = dict(per_modality_projections=True, video_hidden_dim=32, audio_hidden_dim=16) if per_modality else {}
    connectors = LTX2TextConnectors(
        caption_channels=16,
        text_proj_in_factor=3,
        video_connector_num_attention_heads=2,
        video_connector_attention_head_dim=16 if per_modality else 8,
        video_connector_num_layers=1,
        video_connector_num_learnable_registers=8,
        audio_connector_num_attention_heads=2,
        audio_connector_attention_head_dim=8,
        audio_connector_num_layers=1,
        audio_connector_num_learnable_registers=8,
        connector_rope_base_seq_len=16,
        **extra,
    ).eval()
    with torch.no_grad():
        for p in connectors.parameters():
            p.normal_(0, 0.1)
    hidden = torch.randn(2, 16, 16 * 3)
    mask = torch.ones(2, 16, dtype=torch.int64)
    mask[0, :5] = 0  # left padding
    mask[1, :11] = 0
    emb = TextEmbeddings(hidden, mask)
    with torch.no_grad():
        full = apply_connectors(connectors, emb)
        split = connect_text(connectors, project_text(connectors, emb))
    assert torch.equal(full.video, split.video) and torch.equal(full.audio, split.audio)
    assert bool((full.attention_mask == 1).all()) and split.attention_mask is None  # all ones: none (connect_text)
