"""Evaluate the Tiltfile (Starlark) against recording stand-ins for Tilt's built-ins."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import starlark as sl

ROOT = Path(__file__).parent.parent.parent

# The Tilt built-ins the Tiltfile may call; each records its arguments and
# returns a description of the call (what a later built-in receives).
BUILTINS = (
    "version_settings",
    "docker_build",
    "k8s_yaml",
    "helm",
    "k8s_resource",
    "local_resource",
    "sync",
    "run",
    "fall_back_on",
    "port_forward",
    "link",
    "local",
)
CONSTANTS = ("TRIGGER_MODE_MANUAL", "TRIGGER_MODE_AUTO")


@dataclass(frozen=True)
class Call:
    builtin: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    def arg(self, position: int, name: str, default: Any = None) -> Any:
        if len(self.args) > position:
            return self.args[position]
        return self.kwargs.get(name, default)


@dataclass
class Tiltfile:
    calls: list[Call] = field(default_factory=list)

    def of(self, builtin: str) -> list[Call]:
        return [c for c in self.calls if c.builtin == builtin]


def as_call(value: Any) -> Call:
    """The Call a built-in's return value stands for (they come back as dicts)."""
    assert isinstance(value, dict) and "__tilt__" in value, value
    return Call(value["__tilt__"], tuple(value["args"]), dict(value["kwargs"]))


def evaluate(path: Path = ROOT / "Tiltfile") -> Tiltfile:
    tiltfile = Tiltfile()

    def builtin(name: str) -> Any:
        def record(*args: Any, **kwargs: Any) -> dict[str, Any]:
            tiltfile.calls.append(Call(name, args, kwargs))
            return {"__tilt__": name, "args": list(args), "kwargs": kwargs}

        return record

    module = sl.Module()
    for name in BUILTINS:
        module.add_callable(name, builtin(name))
    for name in CONSTANTS:
        module[name] = name
    ast = sl.parse(path.name, path.read_text(), dialect=sl.Dialect.extended())
    sl.eval(module, ast, sl.Globals.standard(), None)
    return tiltfile
