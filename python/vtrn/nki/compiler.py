"""nki.compiler (``import neuronxcc.nki.compiler as ncc``): the direct-allocation API and compiler
directives of NKI. vtrn.nki accepts them and places tiles itself (its allocator honours NKI's
rules), so a kernel written for explicit allocation runs unchanged; the addresses it asks for are
not kept (results do not depend on them)."""

from . import language as nl


class _Space:
    def __init__(self, kind):
        self.kind = kind

    def alloc(self, *args, **kwargs):
        """An allocation function for nl.ndarray(buffer=...): vtrn places the tile itself."""
        return self.kind

    def mod_alloc(self, *args, **kwargs):
        """A modular allocation (base_addr/base_bank, num_free_tiles/num_bank_tiles): vtrn places the
        tiles itself."""
        return self.kind

    def auto_alloc(self, *args, **kwargs):
        return self.kind


sbuf = _Space(nl.sbuf)
psum = _Space(nl.psum)


def _identity_decorator(function=None, **kwargs):
    if function is None:
        return lambda f: f
    return function


skip_middle_end_transformations = _identity_decorator
enable_stack_allocator = _identity_decorator
force_auto_alloc = _identity_decorator


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    from ._core import NKIUnsupportedAttribute
    raise NKIUnsupportedAttribute(f"nki.compiler.{name}")
