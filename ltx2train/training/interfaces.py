"""The contracts of the three axes of training, and of the validation sampler, as ``typing.Protocol`` s.

A run is one method (what is trained), one backend (how it is distributed) and one strategy (how a batch becomes a
loss); ``builder.py`` puts them together and ``trainer.py`` calls them only through these members, so a new
implementation of one axis needs nothing from the others. ``tests/unit/test_interfaces.py`` checks that every shipped
implementation has every member with the same parameters.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

import torch

from ltx2train.training.strategies.tokens import StepInputs

StateDict = dict[str, torch.Tensor]
MakeOptimizer = Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer]


@runtime_checkable
class Backend(Protocol):
    """How the trained module is spread over the processes: wrapping, the backward and step, collectives, and the
    resumable state. ``collective_forward``: every process must run a forward of the wrapped module (sharded
    parameters), so validation runs on all of them."""

    name: str
    collective_forward: bool
    rank: int
    world_size: int
    is_main: bool
    device: torch.device

    def parallelize(self, model: torch.nn.Module, make_optimizer: MakeOptimizer) -> tuple[Any, torch.optim.Optimizer]:
        """(the wrapped module, the optimizer over its trained parameters as the backend holds them)."""

    def unwrap(self, model: Any) -> torch.nn.Module: ...

    def accumulating(self, model: Any, last: bool) -> AbstractContextManager[Any]:
        """Around one micro-batch: gradients synchronised on the ``last`` one only."""

    def autocast(self) -> AbstractContextManager[Any]: ...

    def backward(self, loss: torch.Tensor) -> None: ...

    def step(
        self, optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter], max_grad_norm: float
    ) -> torch.Tensor | float | None:
        """Clip, step, zero the gradients; the gradient norm before clipping (None when not clipped)."""

    def reduce(self, tensor: torch.Tensor, op: str = "mean") -> torch.Tensor: ...

    def barrier(self) -> None: ...

    def full_model(self, model: Any) -> torch.nn.Module:
        """The module a validation forward calls (collective where ``collective_forward``)."""

    def replicas(self, model: Any, names: set[str]) -> StateDict:
        """The trained tensors this process holds in full (compared across processes before a checkpoint)."""

    def gather(self, model: Any, names: set[str]) -> StateDict:
        """Collective: the full trained tensors ``names``, on the main process."""

    def save_state(
        self, directory: str | Path, model: Any, optimizer: torch.optim.Optimizer, names: set[str]
    ) -> None: ...

    def load_state(
        self, directory: str | Path, model: Any, optimizer: torch.optim.Optimizer, names: set[str]
    ) -> tuple[bool, bool]:
        """(the trained state was loaded, the optimizer state was loaded)."""

    def set_full_state(self, model: Any, tensors: StateDict) -> None: ...


@runtime_checkable
class Method(Protocol):
    """What is trained: which parameters of the trained module (``models/trained.py``), what a checkpoint exports
    and how an export is read back."""

    name: str
    export_file: str

    def describe(self) -> str: ...

    def apply(self, model: torch.nn.Module, log: Callable[[str], None], fresh: bool = True) -> None:
        """Freeze, add what is trained (adapters, or unfreeze); on a ``fresh`` run also an initial state."""

    def signature(self) -> dict[str, str]:
        """What a checkpoint must match to resume this run (method, model, adapter shape, trained components)."""

    def trainable_names(self, model: torch.nn.Module) -> set[str]: ...

    def exports(self, model: torch.nn.Module, state: StateDict, metadata: dict[str, str]) -> dict[str, Any]:
        """``{file name: tensors and metadata}`` written into a checkpoint from the gathered trained ``state``."""

    def state_from_export(self, model: torch.nn.Module, checkpoint: Path, source: str) -> StateDict: ...


@runtime_checkable
class Strategy(Protocol):
    """How a batch becomes a loss: which tokens are generated and which are given, the noise, the loss masks."""

    name: str

    @property
    def frozen_modules(self) -> str | None:
        """A regex of module names nothing trains under this strategy, or None."""

    def describe(self) -> str: ...

    def inputs(
        self, batch: dict[str, torch.Tensor], context: Any, generator: Any = None, sigma: torch.Tensor | None = None
    ) -> StepInputs: ...

    def loss(
        self, video_pred: torch.Tensor, audio_pred: torch.Tensor, inputs: StepInputs
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...


@runtime_checkable
class ValidationSampler(Protocol):
    """What validation needs of the prompt sampler (``inference/prompt_sampler.py``)."""

    prompts: Any  # the encoded prompts (``.prompts``: their texts)

    def sample(self, transformer: torch.nn.Module, connectors: torch.nn.Module) -> list[Any]:
        """The clips of every prompt (a collective forward where the backend's is)."""

    def run(self, step: int, transformer: torch.nn.Module, connectors: torch.nn.Module) -> tuple[list[Path], list[Any]]:
        """``sample``, and the clips written as ``step_N_promptI.mp4``: (paths, clips)."""
