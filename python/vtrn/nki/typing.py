"""nki.typing (``import nki.typing as nt``): shape annotations such as ``nt.tensor[128, 512]``.
vtrn.nki accepts them and checks nothing from them (NKI checks shapes against them)."""

from typing import Any


class _Annotation:
    def __init__(self, name: str, spec: Any = None) -> None:
        self.name, self.spec = name, spec

    def __getitem__(self, spec: Any) -> "_Annotation":
        return _Annotation(self.name, spec)

    def __repr__(self) -> str:
        return f"nt.{self.name}[{self.spec!r}]" if self.spec is not None else f"nt.{self.name}"


tensor = _Annotation("tensor")
mutable_tensor = _Annotation("mutable_tensor")
