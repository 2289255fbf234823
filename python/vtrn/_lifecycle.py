"""What every object that owns a C handle shares: close(), a context manager, and a __del__
that closes it and is safe at interpreter shutdown."""

from types import TracebackType
from typing import Self


class Closable:
    """Subclasses set `_closed` to True until fully made, and implement close()."""

    _closed = True

    def close(self) -> None:  # pragma: no cover - every subclass defines it
        """Releases the handle (every subclass says what that means for its object)."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exception_type: type[BaseException] | None, exception: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        # At interpreter shutdown the modules' globals may already be gone; the process is
        # ending then and the library's memory goes with it, so a failure is ignored.
        if getattr(self, "_closed", True):
            return
        try:
            self.close()
        except Exception:  # never raise from a finalizer
            pass
