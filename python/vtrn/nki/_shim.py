"""Makes ``import nki`` and ``import neuronxcc.nki`` (with .language, .isa, .typing) resolve to
vtrn.nki: only when asked (install_import_shim) and only for a package that is not installed."""

import importlib.util
import sys
import types

_NAMES = ("nki", "neuronxcc")
_installed: list[str] = []


def _real(name: str) -> bool:
    if name in sys.modules:
        return not getattr(sys.modules[name], "__vtrn_shim__", False)
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return False
    # A folder that happens to be called nki (a namespace package) is not the package.
    return spec is not None and spec.origin not in (None, "namespace")


def install_import_shim() -> list[str]:
    """``import nki`` / ``import neuronxcc.nki`` now give vtrn.nki, where the real package is
    absent. Returns the top-level names it took over ([] when both are installed for real)."""
    from . import __name__ as package
    nki = sys.modules[package]
    taken = []
    if not _real("nki"):
        sys.modules["nki"] = nki
        sys.modules["nki.language"] = nki.language
        sys.modules["nki.isa"] = nki.isa
        sys.modules["nki.typing"] = nki.typing
        sys.modules["nki.compiler"] = nki.compiler
        sys.modules["nki.collectives"] = nki.collectives
        taken.append("nki")
    if not _real("neuronxcc"):
        neuronxcc = types.ModuleType("neuronxcc", "vtrn.nki's stand-in for the Neuron compiler's package")
        setattr(neuronxcc, "__vtrn_shim__", True)
        setattr(neuronxcc, "__path__", [])
        setattr(neuronxcc, "nki", nki)
        sys.modules["neuronxcc"] = neuronxcc
        sys.modules["neuronxcc.nki"] = nki
        sys.modules["neuronxcc.nki.language"] = nki.language
        sys.modules["neuronxcc.nki.isa"] = nki.isa
        sys.modules["neuronxcc.nki.typing"] = nki.typing
        sys.modules["neuronxcc.nki.compiler"] = nki.compiler
        sys.modules["neuronxcc.nki.collectives"] = nki.collectives
        taken.append("neuronxcc")
    _installed[:] = taken
    return taken


def uninstall_import_shim() -> None:
    """Undoes install_import_shim."""
    for name in list(sys.modules):
        if name.split(".")[0] in _installed and (
                getattr(sys.modules[name], "__vtrn_shim__", False) or sys.modules[name].__name__.startswith("vtrn.nki")):
            del sys.modules[name]
    _installed.clear()
