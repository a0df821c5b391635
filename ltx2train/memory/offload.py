"""Host memory for what the GPU does not need right now: block swap (``memory.block_swap``) and activation offload
(``memory.activation_offload``).

Block swap keeps the frozen weights of the transformer's last N ``transformer_blocks`` in (pinned) host memory
and gives each block a device copy only around the time it runs:

    forward    block i starts: wait for its copy (made on demand if none is under way), start block i+1's
               copy on a side CUDA stream (it overlaps block i's compute); block i ends: its copy is dropped --
               except, when gradients will flow, the last swapped block (backward needs it first) and, without
               gradient checkpointing, every block (autograd keeps its weights for backward: block swap then
               saves memory in validation and inference only)
    backward   the gradient reaches block i's outputs (before any of its backward, and before gradient
               checkpointing recomputes it): wait for block i, start block i-1's copy, drop block i+1's (its
               backward is over); at the end of backward every copy is dropped

Only ``Parameter.data`` changes (the host tensor or the device copy), so the parameter objects the optimizer,
PEFT and DDP hold stay the same. Trainable parameters (LoRA adapters) stay on the device with their gradients and
optimizer state; frozen weights never change, so a copy is dropped, never written back (full fine-tuning, where
nothing is frozen, is refused). Blocks run in order (the ``for block in transformer_blocks`` loop of diffusers'
forward); the hooks are module hooks: nothing of diffusers is patched. On the CPU (host = device) the copies
are real and the schedule the same: only the side stream and the pinning are missing.

Why the last blocks: the first swapped block's copy then overlaps the compute of the resident blocks before it,
and the last one is the first needed in backward, so both passes start without waiting (swapping the first N
would make every forward wait for block 0).

Activation offload keeps the tensors autograd saves for backward in host memory; with gradient checkpointing
those are each block's inputs (and what runs outside the blocks).
"""

from __future__ import annotations

from collections import deque
from contextlib import nullcontext
from functools import partial

import torch

EVENTS_KEPT = 10_000  # the most recent swap events kept in ``BlockSwap.events``


def _in_backward() -> bool:
    """True while autograd runs a backward pass (e.g. gradient checkpointing recomputing a block)."""
    return torch._C._current_graph_task_id() != -1


def _tensors(output) -> list[torch.Tensor]:
    """The tensors a block returns (diffusers' LTX-2 block: ``(hidden_states, audio_hidden_states)``)."""
    return [t for t in (output if isinstance(output, (tuple, list)) else (output,)) if isinstance(t, torch.Tensor)]


class BlockSwap:
    """Block swap on a diffusers ``LTX2VideoTransformer3DModel``: see the module docstring. Build it with
    :func:`enable_block_swap`; ``remove()`` puts every weight back on the device and removes the hooks.

    Observable for tests and logs: ``swapped`` (block indices), ``is_resident(i)`` (from the parameters
    themselves), ``copies`` (host -> device block copies so far) and ``events``: ``(pass, "copy" | "drop", block)``
    in order, ``pass`` being ``"forward"`` or ``"backward"``.
    """

    def __init__(self, transformer: torch.nn.Module, blocks: int, device):
        all_blocks = getattr(transformer, "transformer_blocks", None)
        if not isinstance(all_blocks, torch.nn.ModuleList):
            raise TypeError(f"memory.block_swap: {type(transformer).__name__} has no `transformer_blocks` list to swap")
        if not 0 < blocks <= len(all_blocks):
            raise ValueError(f"memory.block_swap={blocks}: the transformer has {len(all_blocks)} blocks; swap 1 to "
                             f"{len(all_blocks)} of them (0 turns block swap off)")
        self._transformer, self.device = transformer, torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.swapped = list(range(len(all_blocks) - blocks, len(all_blocks)))
        self.copies, self.events = 0, deque(maxlen=EVENTS_KEPT)
        cuda = self.device.type == "cuda"
        self._stream = torch.cuda.Stream(self.device) if cuda else None
        self._weights: dict[int, list[tuple[torch.nn.Parameter, torch.Tensor]]] = {}  # block -> (parameter, host)
        self._pending: dict[int, tuple[list[torch.Tensor], object]] = {}  # copies under way: (buffers, event)
        self._resident: set[int] = set()
        self._graph_task = None
        prefix = {id(all_blocks[i]): f"transformer_blocks.{i}." for i in self.swapped}
        self.parameter_names: list[str] = []  # the swapped parameters, by name in ``transformer``
        for i in self.swapped:
            frozen = [(n, p) for n, p in all_blocks[i].named_parameters() if not p.requires_grad]
            if not frozen:
                raise ValueError(
                    f"memory.block_swap={blocks}: block {i} has no frozen weights to keep in host memory (every one "
                    "is trained, as with train.method=full). Block swap moves frozen weights only; for full "
                    "fine-tuning use distributed.backend=fsdp2 or deepspeed with their offload options")
            self._weights[i] = []
            for name, p in frozen:
                host = torch.empty_like(p, device="cpu", pin_memory=cuda).copy_(p.detach())
                self._weights[i].append((p, host))
                p.data = host
                self.parameter_names.append(prefix[id(all_blocks[i])] + name)
        self._place_rest(transformer)
        self._hooks = []
        for i in range(max(self.swapped[0] - 1, 0), len(all_blocks)):  # the block before the first swapped one too
            self._hooks.append(all_blocks[i].register_forward_pre_hook(partial(self._before_block, i)))
        for i in self.swapped:
            self._hooks.append(all_blocks[i].register_forward_hook(partial(self._after_block, i)))

    def _place_rest(self, transformer: torch.nn.Module) -> None:
        """Everything but the swapped weights on the device (the transformer may have been loaded on the host)."""
        swapped = {id(p) for weights in self._weights.values() for p, _ in weights}
        for p in transformer.parameters():
            if id(p) not in swapped and p.device != self.device:
                p.data = p.data.to(self.device)
        for module in transformer.modules():
            for name, buffer in module._buffers.items():
                if buffer is not None and buffer.device != self.device:
                    module._buffers[name] = buffer.to(self.device)

    # ------------------------------------------------------------------------------------------ the schedule
    def is_resident(self, block: int) -> bool:
        """Block ``block``'s swapped weights are device copies now (not the host tensors)."""
        return all(p.device == self.device and p.data_ptr() != host.data_ptr() for p, host in self._weights[block])

    def _copy(self, block: int, phase: str) -> None:
        """Start the host -> device copy of ``block`` (on the side stream under CUDA), unless it is there or coming."""
        if block not in self._weights or block in self._resident or block in self._pending:
            return
        with torch.cuda.stream(self._stream) if self._stream is not None else nullcontext():
            buffers = [torch.empty_like(host, device=self.device).copy_(host, non_blocking=True)
                       for _, host in self._weights[block]]
            event = self._stream.record_event() if self._stream is not None else None
        self._pending[block] = (buffers, event)
        self.copies += 1
        self.events.append((phase, "copy", block))

    def _make_resident(self, block: int, phase: str) -> None:
        """Block ``block``'s parameters point at its device copy, the compute stream ordered after the copy."""
        if block in self._resident:
            return
        self._copy(block, phase)
        buffers, event = self._pending.pop(block)
        if event is not None:
            stream = torch.cuda.current_stream(self.device)
            stream.wait_event(event)
            for buffer in buffers:  # allocated on the side stream, used on this one: freed only once it is done
                buffer.record_stream(stream)
        for (p, _), buffer in zip(self._weights[block], buffers):
            p.data = buffer
        self._resident.add(block)

    def _drop(self, block: int, phase: str) -> None:
        """Block ``block``'s parameters back to their host tensors; the device copy is freed."""
        self._pending.pop(block, None)
        if block not in self._resident:
            return
        for p, host in self._weights[block]:
            p.data = host
        self._resident.discard(block)
        self.events.append((phase, "drop", block))

    def _drop_all(self, phase: str = "backward") -> None:
        for block in sorted(self._resident | set(self._pending)):
            self._drop(block, phase)

    def _before_block(self, block: int, module, args) -> None:
        if block in self._weights:
            self._make_resident(block, "forward")
        if not _in_backward():  # a recomputation in backward: the gradient hook already did the schedule
            self._copy(block + 1, "forward")

    def _after_block(self, block: int, module, args, output) -> None:
        if _in_backward():  # recomputed for backward: needed until its backward is over
            return
        needing_grad = [t for t in _tensors(output) if t.requires_grad] if torch.is_grad_enabled() else []
        for t in needing_grad:
            t.register_hook(partial(self._gradient_reaches, block))
        if not (needing_grad and self._kept_for_backward(block)):
            self._drop(block, "forward")

    def _kept_for_backward(self, block: int) -> bool:
        """The last block (backward starts with it); every block when the transformer is not checkpointed: autograd
        then holds views of its weights (``weight.t()``) until backward, and a copy dropped now would not be freed."""
        return block == self.swapped[-1] or not getattr(self._transformer, "gradient_checkpointing", False)

    def _gradient_reaches(self, block: int, grad: torch.Tensor) -> None:
        task = torch._C._current_graph_task_id()
        if task != self._graph_task:  # once per backward pass: drop every copy at its end
            self._graph_task = task
            torch.autograd.Variable._execution_engine.queue_callback(self._drop_all)
        self._make_resident(block, "backward")
        self._copy(block - 1, "backward")
        # Autograd runs ready nodes latest-created first, so no node of block+1 is left once block's output
        # gradient is complete.
        self._drop(block + 1, "backward")

    # ------------------------------------------------------------------------------------------ undo
    def remove(self) -> None:
        """Remove the hooks; every swapped weight back on the device (a fresh copy), the host tensors released."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        self._drop_all("remove")
        if self._stream is not None:
            torch.cuda.current_stream(self.device).wait_stream(self._stream)
        for weights in self._weights.values():
            for p, host in weights:
                p.data = host.to(self.device)
        self._weights = {}


def enable_block_swap(transformer: torch.nn.Module, blocks: int, device) -> BlockSwap:
    """Keep the frozen weights of ``transformer``'s last ``blocks`` blocks in host memory (pinned under CUDA),
    each copied to ``device`` one block ahead of use; the rest of the transformer moves to ``device``.

    Call it on the unwrapped transformer after adapters and gradient checkpointing, and before DDP wraps it with
    ``parameter_names`` ignored (DDP requires every parameter it registers on the device; frozen ones it only
    broadcasts once)."""
    return BlockSwap(transformer, blocks, device)


# ---------------------------------------------------------------------------------------------- activation offload
class ActivationOffload(torch.autograd.graph.saved_tensors_hooks):
    """The tensors autograd saves for backward, in host memory (pinned under CUDA, copied without blocking the
    host) until backward unpacks them -- torch's ``save_on_cpu``, plus: a tensor saved more than once is copied
    once (each checkpointed block saves the text context, timestep and rotary embeddings it is given: with
    ``save_on_cpu`` N blocks make N host copies of them), and parameters stay where they are (a weight is no
    activation; copying it every step only costs time). Counters: ``saved`` (tensors through the hook),
    ``copied`` (moved to the host), ``unpacked`` (brought back for backward)."""

    host = "cpu"  # the device type of host memory: tensors there are saved as they are

    def __init__(self):
        from torch.utils.weak import WeakTensorKeyDictionary

        self.pin = torch.cuda.is_available()
        self.saved = self.copied = self.unpacked = 0
        self._copies = WeakTensorKeyDictionary()  # device tensor -> (version, host copy), while it lives
        super().__init__(self._pack, self._unpack)

    def __enter__(self) -> "ActivationOffload":
        super().__enter__()
        return self

    def _pack(self, tensor: torch.Tensor):
        self.saved += 1
        if self._keeps(tensor):
            return None, tensor
        known = self._copies.get(tensor)
        if known is not None and known[0] == tensor._version:
            return tensor.device, known[1]
        host = self._to_host(tensor)
        self._copies[tensor] = (tensor._version, host)
        self.copied += 1
        return tensor.device, host

    def _keeps(self, tensor: torch.Tensor) -> bool:
        """Saved as it is: parameters and views of them (``weight.t()``), and tensors already in host memory."""
        base = tensor._base if tensor._base is not None else tensor
        return isinstance(base, torch.nn.Parameter) or tensor.device.type == self.host

    def _to_host(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.pin and not tensor.is_sparse:
            host = torch.empty(tensor.size(), dtype=tensor.dtype, layout=tensor.layout, pin_memory=True)
            return host.copy_(tensor, non_blocking=True)  # ordered on this stream before any reuse of tensor
        return tensor.to("cpu", copy=True)

    def _unpack(self, packed) -> torch.Tensor:
        device, tensor = packed
        self.unpacked += 1
        return tensor if device is None else tensor.to(device, non_blocking=self.pin)


def offload_activations(enabled: bool = True):
    """Context for a training step's forward and loss: :class:`ActivationOffload` when ``enabled``, else nothing."""
    return ActivationOffload() if enabled else nullcontext()
