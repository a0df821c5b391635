"""The axes' contracts (training/interfaces.py) hold for every shipped implementation: each Protocol member exists
with the Protocol's parameters (names, order, kinds and defaults), and the instances a run builds satisfy the
runtime-checkable Protocols."""

import inspect

import pytest

from conftest import tiny_config
from ltx2train.inference.prompt_sampler import PromptSampler
from ltx2train.training import interfaces
from ltx2train.training.backends.ddp import DDPBackend
from ltx2train.training.backends.deepspeed import DeepSpeedBackend
from ltx2train.training.backends.fsdp2 import FSDP2Backend
from ltx2train.training.methods.full import FullMethod
from ltx2train.training.methods.lora import LoraMethod
from ltx2train.training.strategies.composed import Strategy

IMPLEMENTATIONS = [
    (interfaces.Backend, DDPBackend),
    (interfaces.Backend, FSDP2Backend),
    (interfaces.Backend, DeepSpeedBackend),
    (interfaces.Method, LoraMethod),
    (interfaces.Method, FullMethod),
    (interfaces.Strategy, Strategy),
    (interfaces.ValidationSampler, PromptSampler),
]


def _members(protocol) -> dict[str, object]:
    return {
        name: value
        for name, value in vars(protocol).items()
        if not name.startswith("_") and (callable(value) or isinstance(value, property))
    }


def _parameters(function) -> list[tuple]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


@pytest.mark.parametrize("protocol, cls", IMPLEMENTATIONS, ids=lambda x: x.__name__)
def test_every_member_has_the_protocols_parameters(protocol, cls):
    for name, member in _members(protocol).items():
        assert hasattr(cls, name), f"{cls.__name__} lacks {protocol.__name__}.{name}"
        mine = inspect.getattr_static(cls, name)
        if isinstance(member, property):
            assert isinstance(mine, property), f"{cls.__name__}.{name} is not a property"
        else:
            assert _parameters(mine) == _parameters(member), f"{cls.__name__}.{name}"


@pytest.mark.parametrize("protocol, cls", IMPLEMENTATIONS[:5], ids=lambda x: x.__name__)
def test_backends_and_methods_name_themselves(protocol, cls):
    """``name`` (what checkpoints and logs record) and a method's ``export_file`` are class attributes."""
    for attribute in set(protocol.__annotations__) & {"name", "export_file"}:
        assert isinstance(vars(cls).get(attribute), str), f"{cls.__name__}.{attribute}"


def test_a_built_run_holds_instances_of_each_protocol(tiny_workspace, tmp_path):
    from ltx2train.training.builder import build

    cfg = tiny_config(tiny_workspace, tmp_path / "run", ["train.max_steps=1"])
    run = build(cfg, log=lambda _: None)
    assert isinstance(run.backend, interfaces.Backend) and isinstance(run.method, interfaces.Method)
    assert isinstance(run.strategy, interfaces.Strategy)
    assert isinstance(run.validation_sampler, interfaces.ValidationSampler)
