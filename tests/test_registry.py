"""Registries: checked names, no silent shadowing, helpful unknown-name errors; methods."""

from __future__ import annotations

import copy
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import adaptscope.methods
from adaptscope.errors import AdaptscopeError, RegistryError
from adaptscope.methods import BUILTIN_METHODS, METHODS, Method, MethodContext, register_method
from adaptscope.models import Discriminator, Generator
from adaptscope.models.layers import ConvLayer
from adaptscope.registry import Registry

BUILTIN = ["adam", "bsa", "cdc", "dcl", "ddpm_ft", "domainstudio", "dreambooth", "ewc",
           "freezed", "lora", "minegan", "rick", "tgan", "tgan_ada"]


def first() -> str:
    return "first"


def second() -> str:
    return "second"


@pytest.fixture
def reg() -> Registry:
    return Registry("widget", hint=" (add one with --widget)")


# --- the generic registry ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", "Tgan", "1cdc", "_cdc", "-cdc", "my method", "my.method",
                                  "café", "cdc\n", 3, None])
def test_malformed_names_are_rejected_with_the_rule(reg, name):
    with pytest.raises(RegistryError, match="malformed widget name.*lower-case letter"):
        reg.register(name, first)
    assert len(reg) == 0


@pytest.mark.parametrize("name", ["a", "tgan", "test-noop", "my_method2"])
def test_well_formed_names_are_accepted(reg, name):
    assert reg.register(name, first) is first
    assert reg[name] is first


def test_a_duplicate_name_with_another_item_is_rejected_naming_the_existing_one(reg):
    reg.register("thing", first)
    with pytest.raises(RegistryError, match=r"'thing' is already registered by "
                                            r"test_registry\.first; test_registry\.second"):
        reg.register("thing", second)
    assert reg["thing"] is first


def test_registering_the_same_item_again_is_a_no_op(reg):
    reg.register("thing", first)
    assert reg.register("thing", first) is first
    assert len(reg) == 1 and reg.names() == ["thing"]


def test_unknown_name_lists_the_registered_names_and_the_hint(reg):
    with pytest.raises(RegistryError, match=r"^unknown widget 'b'; registered: none \(add one"):
        reg.get("b")
    reg.register("zeta", first)
    reg.register("alpha", second)
    with pytest.raises(RegistryError) as info:
        reg["alfa"]
    assert str(info.value) == ("unknown widget 'alfa'; registered: alpha, zeta "
                               "(add one with --widget)")
    # One error for everything a user can cause, and still a KeyError for lookups.
    assert isinstance(info.value, KeyError) and isinstance(info.value, AdaptscopeError)


def test_container_protocol_and_decorator_form(reg):
    @reg.add("zeta")
    def zeta() -> None: ...

    reg.register("alpha", first)
    assert zeta.__name__ == "zeta"  # the decorator returns the item itself
    assert list(reg) == reg.names() == ["alpha", "zeta"]
    assert reg.items() == [("alpha", first), ("zeta", zeta)]
    assert "alpha" in reg and "beta" not in reg and 3 not in reg
    assert len(reg) == 2
    assert reg.unregister("alpha") is first
    assert reg.names() == ["zeta"]
    with pytest.raises(RegistryError, match="unknown widget 'alpha'"):
        reg.unregister("alpha")
    reg.register("alpha", second)  # a freed name can be bound again
    assert reg["alpha"] is second


# --- the method registry ----------------------------------------------------------------------


def test_importing_the_package_registers_exactly_the_builtin_methods():
    # A fresh interpreter: nothing but the package import, no method module imported by hand.
    out = subprocess.run(
        [sys.executable, "-c",
         "import adaptscope.methods as m; print(','.join(m.METHODS.names()))"],
        capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ",".join(BUILTIN)
    for cls in BUILTIN_METHODS:
        assert METHODS[cls.name] is cls


@pytest.mark.parametrize("module", ["tgan", "freezed", "ewc", "cdc", "dcl", "bsa", "minegan",
                                    "adam", "rick"])
def test_method_modules_register_nothing_when_imported(module, monkeypatch):
    # Executing a module afresh defines new classes; a registration side effect would add them
    # or fail as a duplicate of the registered ones.
    path = Path(adaptscope.methods.__file__).with_name(f"{module}.py")
    spec = importlib.util.spec_from_file_location(f"_fresh_{module}", path)
    fresh = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, fresh)  # dataclasses look their module up
    before = METHODS.items()
    spec.loader.exec_module(fresh)
    assert METHODS.items() == before


def test_a_plugin_cannot_shadow_a_builtin_method():
    class Impostor(Method):
        summary = "test"

    with pytest.raises(RegistryError, match=r"'cdc' is already registered by "
                                            r"adaptscope\.methods\.cdc\.CDC"):
        register_method("cdc")(Impostor)
    assert Impostor.name == ""  # left untouched when refused
    with pytest.raises(RegistryError, match="malformed method name 'My Method'"):
        register_method("My Method")(Impostor)
    assert METHODS.names() == BUILTIN


def context(seed: int) -> MethodContext:
    torch.manual_seed(seed)
    ch = {4: 16, 8: 16, 16: 8}
    g, d = Generator(16, 32, 2, channels=ch), Discriminator(16, channels=ch)
    return MethodContext(g=g, d=d, g_source=copy.deepcopy(g).requires_grad_(False),
                         d_source=copy.deepcopy(d).requires_grad_(False),
                         shots=torch.rand(4, 3, 16, 16) * 2 - 1, mixing=0.0)


def test_cdc_patch_head_is_built_on_a_resumed_run_and_loads_its_weights():
    cls = METHODS["cdc"]
    trained = cls(cls.Params(), context(0))
    trained.build()
    trained.setup()
    with torch.no_grad():
        trained.scheme.head[0].weight.add_(1.0)  # as if trained
    resumed = cls(cls.Params(), context(1))
    resumed.build()  # no setup(): a resumed run loads the state instead
    assert resumed.extra_d_modules() == [resumed.scheme.head]
    assert not torch.equal(resumed.scheme.head[0].weight, trained.scheme.head[0].weight)
    resumed.load_state_dict(trained.state_dict())
    assert torch.equal(resumed.scheme.head[0].weight, trained.scheme.head[0].weight)
    assert torch.equal(resumed.scheme.anchors, trained.scheme.anchors)


def test_cdc_build_draws_only_the_patch_head_initialisation():
    # The run's random stream must not depend on where the head is created: build() draws
    # exactly what constructing the head draws, nothing more.
    cls = METHODS["cdc"]
    method = cls(cls.Params(), context(0))
    torch.manual_seed(7)
    method.build()
    after_build = torch.get_rng_state()
    torch.manual_seed(7)
    head = ConvLayer(method.ctx.d.channels[8], 1, 3)  # conv + leaky ReLU, as CDC's Extra
    assert torch.equal(head[0].weight, method.scheme.head[0].weight)
    assert torch.equal(torch.get_rng_state(), after_build)
