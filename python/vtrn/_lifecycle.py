"""What every object that owns a C handle shares: close(), a context manager, and a __del__
that closes it and is safe at interpreter shutdown."""


class Closable:
    """Subclasses set `_closed` to True until fully made, and implement close()."""

    _closed = True

    def close(self):  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __del__(self):
        # At interpreter shutdown the modules' globals may already be gone; the process is
        # ending then and the library's memory goes with it, so a failure is ignored.
        if getattr(self, "_closed", True):
            return
        try:
            self.close()
        except Exception:  # never raise from a finalizer
            pass
