"""Block swap and activation offload (ltx2train/memory/offload.py) on a 4-block tiny LTX-2 transformer, on CPU:
the same numbers as without them, and the schedule that makes them save memory on a GPU."""

import copy

import pytest
import torch

from conftest import tiny_config, transformer_inputs
from ltx2train.memory.offload import ActivationOffload, enable_block_swap, offload_activations
from ltx2train.models.specs import ComponentSpec, load_variant
from ltx2train.training.methods.lora import add_lora

BLOCKS, SWAPPED = 4, 2
CPU = torch.device("cpu")


def _transformer(root, tmp_path, checkpointing=False):
    """The tiny transformer with 4 blocks, LoRA on it, every adapter weight non-zero (so every gradient flows)."""
    cfg = tiny_config(root, tmp_path / "unused")
    spec = load_variant("tiny").component("transformer")
    torch.manual_seed(0)
    transformer = ComponentSpec(spec.name, spec.class_name, {**spec.config, "num_layers": BLOCKS}).build()
    params = add_lora(transformer, cfg.lora)
    with torch.no_grad():
        for p in params:
            p.normal_(0, 0.05)
    if checkpointing:
        transformer.enable_gradient_checkpointing()
    return transformer.train(), params


@pytest.fixture
def inputs(tiny_workspace, tmp_path):
    return transformer_inputs(tiny_workspace, tmp_path)


def _loss_and_grads(transformer, params, kwargs):
    """The loss, and the gradients of the adapters and of the video/audio input tokens."""
    kwargs = dict(kwargs)
    tokens = [kwargs[k].clone().requires_grad_(True) for k in ("hidden_states", "audio_hidden_states")]
    kwargs["hidden_states"], kwargs["audio_hidden_states"] = tokens
    for p in params:
        p.grad = None
    video, audio = transformer(**kwargs)
    loss = video.pow(2).mean() + audio.pow(2).mean()
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in params] + [t.grad.clone() for t in tokens]


def _blocks_seen(transformer, swap):
    """Record, for every swapped block, whether it was resident when it ran -- forward, recomputation and
    backward (a gradient hook on the outputs of three of its layers, registered in the forward, fires just before
    that layer's backward uses its weights)."""
    seen = []

    def forward_check(i, module, args):
        seen.append(("forward" if torch._C._current_graph_task_id() == -1 else "recompute", i, swap.is_resident(i)))

    def backward_check(i, module, args, output):
        if torch._C._current_graph_task_id() == -1 and output.requires_grad:
            output.register_hook(lambda grad: seen.append(("backward", i, swap.is_resident(i))))

    handles = []
    for i in swap.swapped:
        block = transformer.transformer_blocks[i]
        handles.append(block.register_forward_pre_hook(lambda m, a, i=i: forward_check(i, m, a)))
        for name in ("attn1", "audio_attn1", "ff"):
            handles.append(getattr(block, name).register_forward_hook(lambda m, a, o, i=i: backward_check(i, m, a, o)))
    return seen, handles


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "checkpointed"])
def test_block_swap_gives_the_same_outputs_and_gradients(tiny_workspace, tmp_path, inputs, checkpointing):
    reference, ref_params = _transformer(tiny_workspace, tmp_path, checkpointing)
    swapped, params = _transformer(tiny_workspace, tmp_path, checkpointing)
    swap = enable_block_swap(swapped, SWAPPED, CPU)
    assert swap.swapped == [2, 3]  # the last blocks
    trainable = {id(p) for p in params}
    names = {n for n, _ in swapped.named_parameters()}
    assert swap.parameter_names and set(swap.parameter_names) <= names
    assert all(n.startswith(("transformer_blocks.2.", "transformer_blocks.3.")) for n in swap.parameter_names)
    assert not any(id(p) in trainable for p, _ in swap._weights[2])  # adapters stay on the device
    loss_ref, grads_ref = _loss_and_grads(reference, ref_params, inputs)
    for _ in range(2):  # twice: the second step starts from the state the first left
        loss, grads = _loss_and_grads(swapped, params, inputs)
        assert torch.equal(loss, loss_ref)
        assert len(grads) == len(grads_ref) and all(torch.equal(a, b) for a, b in zip(grads, grads_ref))
        assert all(g.abs().sum() > 0 for g in grads)
        assert not any(swap.is_resident(i) for i in swap.swapped)  # every copy dropped at the end of backward
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(swapped.eval()(**inputs), reference.eval()(**inputs)))


@pytest.mark.parametrize(
    "checkpointing, early_stop",
    [(False, True), (True, True), (True, False)],
    ids=["plain", "checkpointed", "checkpointed-full-recompute"],
)
def test_each_swapped_block_is_resident_exactly_when_it_runs(
    tiny_workspace, tmp_path, inputs, checkpointing, early_stop
):
    from torch.utils.checkpoint import set_checkpoint_early_stop

    transformer, params = _transformer(tiny_workspace, tmp_path, checkpointing)
    swap = enable_block_swap(transformer, SWAPPED, CPU)
    seen, handles = _blocks_seen(transformer, swap)
    assert not any(swap.is_resident(i) for i in swap.swapped)  # at rest every swapped weight is in host memory
    swap.events.clear()
    with set_checkpoint_early_stop(early_stop):  # without early stop the recomputation runs the block to its end
        _loss_and_grads(transformer, params, inputs)
    assert seen and all(resident for _, _, resident in seen)
    phases = [phase for phase, _, _ in seen]
    assert phases.count("forward") == 2 and phases.count("backward") == 6
    assert phases.count("recompute") == (2 if checkpointing else 0)
    # Checkpointed forward: block 2 copied while block 1 runs, block 3 while block 2 runs; block 2 dropped after it ran,
    # block 3 kept (backward starts with it). Backward, in reverse: block 2 copied when the gradient reaches
    # block 3, block 3 dropped when it reaches block 2, block 2 dropped at the end.
    if checkpointing:
        assert list(swap.events) == [
            ("forward", "copy", 2),
            ("forward", "copy", 3),
            ("forward", "drop", 2),
            ("backward", "copy", 2),
            ("backward", "drop", 3),
            ("backward", "drop", 2),
        ]
    else:  # autograd holds views of the weights until backward: the blocks stay from forward to backward
        assert list(swap.events) == [
            ("forward", "copy", 2),
            ("forward", "copy", 3),
            ("backward", "drop", 3),
            ("backward", "drop", 2),
        ]
    assert swap.copies == (3 if checkpointing else 2)
    # Without gradients every block is dropped after it runs.
    swap.events.clear()
    with torch.no_grad():
        transformer(**inputs)
    assert list(swap.events) == [
        ("forward", "copy", 2),
        ("forward", "copy", 3),
        ("forward", "drop", 2),
        ("forward", "drop", 3),
    ]
    for handle in handles:
        handle.remove()


def test_all_blocks_swapped_and_the_resident_copy_is_a_device_copy(tiny_workspace, tmp_path, inputs):
    transformer, params = _transformer(tiny_workspace, tmp_path, checkpointing=True)
    reference = copy.deepcopy(transformer)
    swap = enable_block_swap(transformer, BLOCKS, CPU)
    seen, _ = _blocks_seen(transformer, swap)
    hosts = {id(p): host for block in swap._weights.values() for p, host in block}
    weight = transformer.transformer_blocks[0].attn1.to_q.base_layer.weight
    assert weight.data_ptr() == hosts[id(weight)].data_ptr()
    transformer.transformer_blocks[0].register_forward_pre_hook(
        lambda m, a: seen.append(("ptr", 0, weight.data_ptr() != hosts[id(weight)].data_ptr()))
    )
    _, grads = _loss_and_grads(transformer, params, inputs)
    _, expected = _loss_and_grads(reference, [p for n, p in reference.named_parameters() if "lora_" in n], inputs)
    assert all(torch.equal(a, b) for a, b in zip(grads, expected))
    assert all(resident for _, _, resident in seen) and ("ptr", 0, True) in seen
    assert swap.swapped == [0, 1, 2, 3] and swap.copies == 4 + 3  # block 0 on demand; 3 kept from forward


def test_remove_restores_every_weight_and_hook(tiny_workspace, tmp_path, inputs):
    transformer, params = _transformer(tiny_workspace, tmp_path)
    before = {n: (p, p.detach().clone()) for n, p in transformer.named_parameters()}
    hooks = {n: (len(m._forward_pre_hooks), len(m._forward_hooks)) for n, m in transformer.named_modules()}
    swap = enable_block_swap(transformer, SWAPPED, CPU)
    _loss_and_grads(transformer, params, inputs)
    swap.remove()
    after = dict(transformer.named_parameters())
    assert after.keys() == before.keys()
    assert all(after[n] is p and torch.equal(p, value) and p.device == CPU for n, (p, value) in before.items())
    assert hooks == {n: (len(m._forward_pre_hooks), len(m._forward_hooks)) for n, m in transformer.named_modules()}
    swap.events.clear()
    _loss_and_grads(transformer, params, inputs)
    assert not swap.events


def test_block_swap_refuses_what_it_cannot_do(tiny_workspace, tmp_path):
    transformer, _ = _transformer(tiny_workspace, tmp_path)
    with pytest.raises(ValueError, match=r"memory.block_swap=5: the transformer has 4 blocks"):
        enable_block_swap(transformer, 5, CPU)
    transformer.requires_grad_(True)  # full fine-tuning: nothing frozen to keep on the host
    with pytest.raises(ValueError, match=r"block 3 has no frozen weights.*trained_on_host=True"):
        enable_block_swap(transformer, 1, CPU)


def _full(root, tmp_path, checkpointing):
    """The 4-block tiny transformer fully trained (every weight float32 and trainable), with an AdamW."""
    spec = load_variant("tiny").component("transformer")
    torch.manual_seed(0)
    transformer = ComponentSpec(spec.name, spec.class_name, {**spec.config, "num_layers": BLOCKS}).build().float()
    transformer.requires_grad_(True)
    if checkpointing:
        transformer.enable_gradient_checkpointing()
    return transformer.train(), torch.optim.AdamW(transformer.parameters(), lr=1e-3)


def _full_step(transformer, optimizer, micro_batches, swap=None):
    """One optimizer step over ``micro_batches`` accumulated gradients; the gradients it stepped with."""
    for i, kwargs in enumerate(micro_batches):
        if swap is not None:
            swap.gradients.reduce = i == len(micro_batches) - 1
        video, audio = transformer(**kwargs)
        ((video.pow(2).mean() + audio.pow(2).mean()) / len(micro_batches)).backward()
    grads = {n: p.grad.clone() for n, p in transformer.named_parameters()}
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return grads


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "checkpointed"])
def test_full_fine_tuning_with_swapped_blocks_trains_what_it_trains_without(
    tiny_workspace, tmp_path, inputs, checkpointing
):
    reference, ref_optimizer = _full(tiny_workspace, tmp_path, checkpointing)
    swapped, optimizer = _full(tiny_workspace, tmp_path, checkpointing)
    swap = enable_block_swap(swapped, SWAPPED, CPU, trained_on_host=True)
    hosts = {id(p): host for block in swap._weights.values() for p, host in block}
    assert all(n.startswith(("transformer_blocks.2.", "transformer_blocks.3.")) for n in swap.parameter_names)
    assert len(hosts) == len(list(swapped.transformer_blocks[2:].parameters()))  # trained weights swapped too
    second = {**inputs, "hidden_states": inputs["hidden_states"].flip(1)}
    for _ in range(2):  # two optimizer steps of two accumulated micro-batches
        expected = _full_step(reference, ref_optimizer, [inputs, second])
        grads = _full_step(swapped, optimizer, [inputs, second], swap)
        assert grads.keys() == expected.keys() and all(torch.equal(grads[n], expected[n]) for n in grads)
        assert not any(swap.is_resident(i) for i in swap.swapped)
        for p in swapped.transformer_blocks[2:].parameters():  # the optimizer stepped the host master weights
            assert p.data_ptr() == hosts[id(p)].data_ptr() and p.grad is None
        after = dict(reference.named_parameters())
        assert all(torch.equal(p, after[n]) for n, p in swapped.named_parameters())
    assert swap.copies > 0
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(swapped.eval()(**inputs), reference.eval()(**inputs)))


class OffloadingOnCpu(ActivationOffload):
    """The CPU standing in for the GPU: its tensors are copied to the host too (parameters stay), each recorded."""

    host = "no host"

    def __init__(self):
        super().__init__()
        self.kept, self.copies = [], []

    def _keeps(self, tensor):
        self.kept.append(super()._keeps(tensor))
        return self.kept[-1]

    def _to_host(self, tensor):
        self.copies.append(tuple(tensor.shape))
        return super()._to_host(tensor)


def _offloaded_grads(transformer, params, kwargs, hooks):
    kwargs = dict(kwargs)
    tokens = [kwargs[k].clone().requires_grad_(True) for k in ("hidden_states", "audio_hidden_states")]
    kwargs["hidden_states"], kwargs["audio_hidden_states"] = tokens
    for p in params:
        p.grad = None
    with hooks:
        video, audio = transformer(**kwargs)
        loss = video.pow(2).mean() + audio.pow(2).mean()
    loss.backward()
    return [p.grad.clone() for p in params] + [t.grad.clone() for t in tokens]


def test_activation_offload_keeps_gradients_bit_identical_and_copies_each_saved_tensor_once(
    tiny_workspace, tmp_path, inputs
):
    transformer, params = _transformer(tiny_workspace, tmp_path, checkpointing=True)
    _, plain = _loss_and_grads(transformer, params, inputs)
    on_cpu = offload_activations(True)  # what a CPU run gets: every tensor is already on the host
    assert isinstance(on_cpu, ActivationOffload)
    assert all(torch.equal(a, b) for a, b in zip(plain, _offloaded_grads(transformer, params, inputs, on_cpu)))
    assert on_cpu.saved > 0 and on_cpu.copied == 0 and on_cpu.unpacked == on_cpu.saved
    hooks = OffloadingOnCpu()
    assert all(torch.equal(a, b) for a, b in zip(plain, _offloaded_grads(transformer, params, inputs, hooks)))
    assert hooks.saved == on_cpu.saved and hooks.unpacked == hooks.saved
    # Each checkpointed block saves its inputs through the hook: the video tokens (B, N_video, C) of every block.
    inner = transformer.config.num_attention_heads * transformer.config.attention_head_dim
    assert hooks.copies.count((*inputs["hidden_states"].shape[:2], inner)) >= BLOCKS
    # What every block is given (text context, embeddings) is copied once: far fewer copies than saved tensors.
    assert hooks.copied == len(hooks.copies) and hooks.copied + sum(hooks.kept) < hooks.saved
    assert any(hooks.kept)  # the output projections' weights (transposed views), saved as they are
    assert not isinstance(offload_activations(False), ActivationOffload)


def test_training_with_block_swap_and_activation_offload_matches_training_without(tiny_workspace, tmp_path):
    from conftest import LORA_TRAIN
    from ltx2train.memory.offload import BlockSwap
    from ltx2train.training.trainer import Trainer

    common = [
        *LORA_TRAIN,
        "train.max_steps=8",
        "train.checkpoint_every=0",
        "train.gradient_checkpointing=true",
        "validation.loss_sigmas=[0.5]",
        "validation.at_start=true",
    ]
    plain = Trainer(tiny_config(tiny_workspace, tmp_path / "plain", common), log=lambda _: None).train()
    trainer = Trainer(
        tiny_config(
            tiny_workspace, tmp_path / "offloaded", [*common, "memory.block_swap=2", "memory.activation_offload=true"]
        ),
        log=lambda _: None,
    )
    offloaded = trainer.train()
    swap = trainer.run.backend.block_swap
    assert isinstance(swap, BlockSwap) and swap.swapped == [0, 1]  # the tiny model's 2 blocks
    assert swap.copies >= 8 * 3  # per step: 2 blocks in forward, 1 more in backward (the last one is kept)
    assert all(torch.isfinite(torch.tensor(loss)) for _, loss in offloaded.losses)
    assert offloaded.losses == plain.losses  # on CPU every number is the same
    (_, before), (_, after) = offloaded.validation_losses
    assert offloaded.validation_losses == plain.validation_losses and after < before


def test_block_swap_over_an_fp8_base_trains(tiny_workspace, tmp_path):
    """memory.block_swap with memory.fp8_frozen=[transformer]: the swapped blocks' FP8 weights move between host
    and device as float8, training runs and the frozen base is unchanged."""
    from conftest import LORA_TRAIN
    from ltx2train.training.trainer import Trainer

    from ltx2train.memory.fp8 import store_fp8
    from ltx2train.models.loading import load_component

    cfg = tiny_config(
        tiny_workspace,
        tmp_path / "run",
        [
            *LORA_TRAIN,
            "train.max_steps=4",
            "train.checkpoint_every=0",
            "train.gradient_checkpointing=true",
            "memory.block_swap=1",
            "memory.fp8_frozen=[transformer]",
        ],
    )
    fresh = load_component(cfg.model.variant, "transformer", cfg.model.checkpoint)
    store_fp8(fresh, "transformer", compute_dtype=torch.float32)
    before = {n: p.detach() for n, p in fresh.named_parameters() if p.dtype == torch.float8_e4m3fn}
    trainer = Trainer(cfg, log=lambda _: None)
    result = trainer.train()
    assert before and trainer.run.backend.block_swap.copies >= 4
    assert all(torch.isfinite(torch.tensor(loss)) for _, loss in result.losses)
    after = {n.replace("base_layer.", ""): p for n, p in trainer.model.named_parameters()}
    assert all(
        after[n].dtype == torch.float8_e4m3fn
        and torch.equal(after[n].detach().cpu().view(torch.uint8), p.cpu().view(torch.uint8))
        for n, p in before.items()
    )
