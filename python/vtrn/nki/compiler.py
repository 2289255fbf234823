"""nki.compiler (``import neuronxcc.nki.compiler as ncc``): the direct-allocation API and compiler
directives of NKI. vtrn.nki accepts them and places tiles itself (its allocator honours NKI's
rules), so a kernel written for explicit allocation runs unchanged; the addresses it asks for are
not kept (results do not depend on them)."""

from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

from . import language as nl

_Function = TypeVar("_Function", bound=Callable[..., Any])


class _Space:
    def __init__(self, kind: "nl._BufferKind") -> None:
        self.kind = kind

    def alloc(self, *args: Any, **kwargs: Any) -> "nl._BufferKind":
        """An allocation function for nl.ndarray(buffer=...): vtrn places the tile itself."""
        return self.kind

    def mod_alloc(self, *args: Any, **kwargs: Any) -> "nl._BufferKind":
        """A modular allocation (base_addr/base_bank, num_free_tiles/num_bank_tiles): vtrn places the
        tiles itself."""
        return self.kind

    def auto_alloc(self, *args: Any, **kwargs: Any) -> "nl._BufferKind":
        """Automatic allocation: what vtrn does anyway."""
        return self.kind


sbuf = _Space(nl.sbuf)
psum = _Space(nl.psum)


def _identity_decorator(function: _Function | None = None, **kwargs: Any) -> Any:
    if function is None:
        return lambda f: f
    return function


def skip_middle_end_transformations(function: _Function | None = None, **kwargs: Any) -> Any:
    """A compiler directive (a decorator, with or without arguments): vtrn.nki runs the kernel as it is."""
    return _identity_decorator(function, **kwargs)


def enable_stack_allocator(function: _Function | None = None, **kwargs: Any) -> Any:
    """A compiler directive (a decorator, with or without arguments): vtrn.nki places tiles itself."""
    return _identity_decorator(function, **kwargs)


def force_auto_alloc(function: _Function | None = None, **kwargs: Any) -> Any:
    """A compiler directive (a decorator, with or without arguments): vtrn.nki places tiles itself."""
    return _identity_decorator(function, **kwargs)


def __getattr__(name: str) -> NoReturn:
    if name.startswith("__"):
        raise AttributeError(name)
    from ._core import NKIUnsupportedAttribute
    raise NKIUnsupportedAttribute(f"nki.compiler.{name}")
