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
    assert batch.video.shape == (2, 16, cfg.video_connector_num_attention_heads * cfg.video_connector_attention_head_dim)
    assert batch.audio.shape == (2, 16, cfg.audio_connector_num_attention_heads * cfg.audio_connector_attention_head_dim)
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
