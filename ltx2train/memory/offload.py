"""Host memory for what the GPU does not need right now: block swap (``memory.block_swap``) and activation offload
(``memory.activation_offload``).

Block swap keeps the weights of the transformer's last N ``transformer_blocks`` in (pinned) host memory and gives each block a device copy only around the time it runs:

    forward    block i starts: wait for its copy (made on demand if none is under way), start block i+1's
               copy on a side CUDA stream (it overlaps block i's compute); block i ends: its copy is dropped --
               except, when gradients will flow, the last swapped block (backward needs it first) and, without
               gradient checkpointing, every block (autograd keeps its weights for backward: block swap then
               saves memory in validation and inference only)
    backward   the gradient reaches block i's outputs (before any of its backward, and before gradient
               checkpointing recomputes it): wait for block i, start block i-1's copy, drop block i+1's (its
               backward is over); at the end of backward every copy is dropped

Only ``Parameter.data`` changes (the host tensor or the device copy), so the parameter objects the optimizer,
PEFT and DDP hold stay the same. Frozen weights never change, so a copy is dropped, never written back. Trained
weights are either left on the device (``trained_on_host=False``: a LoRA's adapters, with their gradients and
optimizer state) or swapped with the frozen ones (``trained_on_host=True``: full fine-tuning). Then the host
tensor is the float32 master weight and the optimizer steps it in host memory, where its gradient and optimizer
state live too: each gradient leaves the device as soon as autograd has accumulated it (a non-blocking copy to
pinned memory), is summed on the host over micro-batches, and at the end of the backward that synchronises the
processes it is averaged over them (its own process group, beside DDP's buckets, which do not hold these
parameters). The next forward copies the updated weights. Blocks run in order (the ``for block in
transformer_blocks`` loop of diffusers' forward); the hooks are module and parameter hooks: nothing of diffusers
is patched. On the CPU (host = device) the copies are real and the schedule the same: only the side stream and
the pinning are missing.

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

from ltx2train.utils.autograd import in_backward
from ltx2train.utils.errors import UserError

EVENTS_KEPT = 10_000  # the most recent swap events kept in ``BlockSwap.events``


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

    def __init__(self, transformer: torch.nn.Module, blocks: int, device, trained_on_host: bool = False):
        all_blocks = getattr(transformer, "transformer_blocks", None)
        if not isinstance(all_blocks, torch.nn.ModuleList):
            raise TypeError(f"memory.block_swap: {type(transformer).__name__} has no `transformer_blocks` list to swap")
        if not 0 < blocks <= len(all_blocks):
            raise UserError(
                f"memory.block_swap={blocks}: the transformer has {len(all_blocks)} blocks; swap 1 to "
                f"{len(all_blocks)} of them (0 turns block swap off)"
            )
        self._transformer, self.device = transformer, torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.swapped = list(range(len(all_blocks) - blocks, len(all_blocks)))
        self.copies, self.events = 0, deque(maxlen=EVENTS_KEPT)
        self._stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self._pending: dict[int, tuple[list[torch.Tensor], object]] = {}  # copies under way: (buffers, event)
        self._resident: set[int] = set()
        self._graph_task = None
        self._weights, self.parameter_names = self._to_host(all_blocks, trained_on_host)
        self._trained = {id(p) for weights in self._weights.values() for p, _ in weights if p.requires_grad}
        self.gradients = HostGradients(
            [p for w in self._weights.values() for p, _ in w if id(p) in self._trained], self.device
        )
        self._place_rest(transformer)
        self._hooks = []
        for i in range(max(self.swapped[0] - 1, 0), len(all_blocks)):  # the block before the first swapped one too
            self._hooks.append(all_blocks[i].register_forward_pre_hook(partial(self._before_block, i)))
        for i in self.swapped:
            self._hooks.append(all_blocks[i].register_forward_hook(partial(self._after_block, i)))

    def _to_host(self, all_blocks: torch.nn.ModuleList, trained_on_host: bool):
        """The swapped blocks' weights (frozen ones; trained ones too with ``trained_on_host``) moved to host
        memory: ({block: [(parameter, host tensor)]}, their names in the transformer)."""
        weights, names, pin = {}, [], self._stream is not None
        for i in self.swapped:
            moved = [(n, p) for n, p in all_blocks[i].named_parameters() if trained_on_host or not p.requires_grad]
            if not moved:
                raise UserError(
                    f"memory.block_swap: block {i} has no frozen weights to keep in host memory (every one is "
                    "trained); swap trained weights too (trained_on_host=True, as train.method=full does)"
                )
            weights[i] = []
            for name, p in moved:
                host = torch.empty_like(p, device="cpu", pin_memory=pin).copy_(p.detach())
                weights[i].append((p, host))
                p.data = host
                names.append(f"transformer_blocks.{i}.{name}")
        return weights, names

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
            buffers = [
                torch.empty_like(host, device=self.device).copy_(host, non_blocking=True)
                for _, host in self._weights[block]
            ]
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
            if id(p) in self._trained and (torch.is_grad_enabled() or in_backward()):
                self.gradients.set_aside(p)  # its host gradient must not meet the device copy's
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

    def _backward_done(self) -> None:
        self._drop_all("backward")
        self.gradients.finish()

    def _before_block(self, block: int, module, args) -> None:
        if block in self._weights:
            self._make_resident(block, "forward")
        if not in_backward():  # a recomputation in backward: the gradient hook already did the schedule
            self._copy(block + 1, "forward")

    def _after_block(self, block: int, module, args, output) -> None:
        if in_backward():  # recomputed for backward: needed until its backward is over
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
            torch.autograd.Variable._execution_engine.queue_callback(self._backward_done)
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
        self.gradients.remove()
        if self._stream is not None:
            torch.cuda.current_stream(self.device).wait_stream(self._stream)
        for weights in self._weights.values():
            for p, host in weights:
                p.data = host.to(self.device)
                if p.grad is not None:
                    p.grad = p.grad.to(self.device)
        self._weights = {}


def enable_block_swap(transformer: torch.nn.Module, blocks: int, device, trained_on_host: bool = False) -> BlockSwap:
    """Keep the frozen weights of ``transformer``'s last ``blocks`` blocks in host memory (pinned under CUDA),
    each copied to ``device`` one block ahead of use; the rest of the transformer moves to ``device``. With
    ``trained_on_host`` (full fine-tuning) their trained weights too, stepped by the optimizer in host memory.

    Call it on the unwrapped transformer after adapters and gradient checkpointing, and before DDP wraps it with
    ``parameter_names`` ignored (DDP requires every parameter it registers on the device; frozen ones it only
    broadcasts once)."""
    return BlockSwap(transformer, blocks, device, trained_on_host)


class HostGradients:
    """The gradients of trained weights that block swap keeps in host memory (``trained_on_host``). While a
    weight is a device copy its ``.grad`` is None: what it held is set aside, and each gradient autograd
    accumulates leaves the device at once (a non-blocking copy into pinned memory). At the end of the backward:
    the sum per weight becomes its ``.grad`` again (in host memory, where the optimizer steps it), averaged over
    the processes when ``reduce`` is true -- the backend sets it false on micro-batches that only accumulate."""

    def __init__(self, params: list[torch.nn.Parameter], device: torch.device):
        self.pin, self.device, self.reduce = device.type == "cuda", device, True
        self._params = {id(p): p for p in params}
        self._sums: dict[int, torch.Tensor] = {}  # what .grad held before the weight became a device copy
        self._staged: dict[int, list[torch.Tensor]] = {}  # gradients of this backward, in host memory
        self._group = _gradient_group() if params else None
        self._hooks = [p.register_post_accumulate_grad_hook(self._accumulated) for p in params]

    def set_aside(self, p: torch.nn.Parameter) -> None:
        if p.grad is not None:
            self._sums[id(p)] = p.grad
            p.grad = None

    def _accumulated(self, p: torch.nn.Parameter) -> None:
        grad, p.grad = p.grad, None
        if grad.device.type != "cpu":
            host = torch.empty(grad.shape, dtype=grad.dtype, pin_memory=self.pin)
            grad = host.copy_(grad, non_blocking=self.pin)  # ordered before any reuse of grad's memory
        self._staged.setdefault(id(p), []).append(grad)

    def finish(self) -> None:
        if self.pin:
            torch.cuda.current_stream(self.device).synchronize()  # every staged copy has landed
        totals = {}
        for key in [k for k in self._params if k in self._sums or k in self._staged]:  # the same order on every rank
            parts = ([self._sums.pop(key)] if key in self._sums else []) + self._staged.pop(key, [])
            totals[key] = parts[0]
            for grad in parts[1:]:
                totals[key].add_(grad)  # the order AccumulateGrad sums in: the same bits as without swap
        if self.reduce and self._group is not None:
            self._average(list(totals.values()))
        for key, total in totals.items():
            self._params[key].grad = total

    def _average(self, grads: list[torch.Tensor]) -> None:
        """The mean over the processes, in this object's process group (through the device where it is NCCL)."""
        import torch.distributed as dist

        world, on_host = dist.get_world_size(self._group), dist.get_backend(self._group) == "gloo"
        for grad in grads:
            work = grad if on_host else grad.to(self.device, non_blocking=self.pin)
            dist.all_reduce(work, group=self._group)
            if not on_host:
                grad.copy_(work)
            grad.div_(world)

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []


def _gradient_group():
    """A process group of every process for the host gradients, when there are several: collectives in it are
    ordered apart from DDP's own (which run asynchronously in the default group during backward)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist.new_group()
    return None


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
