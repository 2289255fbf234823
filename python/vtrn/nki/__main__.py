"""python -m vtrn.nki run KERNEL.py [ARGS...]   runs an NKI kernel file unmodified on vtrn: `import nki`
                                                 and `import neuronxcc.nki` resolve to vtrn.nki (where
                                                 the real packages are absent) and the file runs as
                                                 __main__; --report prints each kernel run's costs
python -m vtrn.nki bench                         vtrn against eager numpy on the same kernels
"""

import os
import runpy
import sys
from typing import Any


def _run(arguments: list[str]) -> int:
    report = False
    while arguments and arguments[0].startswith("--"):
        option = arguments.pop(0)
        if option == "--report":
            report = True
        else:
            print(f"vtrn.nki run: unknown option {option}", file=sys.stderr)
            return 2
    if not arguments:
        print(__doc__, file=sys.stderr)
        return 2
    path = arguments[0]
    if not os.path.isfile(path):
        print(f"vtrn.nki run: {path}: no such file", file=sys.stderr)
        return 2
    from . import NKIError, _kernel, install_import_shim
    install_import_shim()
    sys.argv = list(arguments)
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    if report:
        original = _kernel.run

        def reporting(*args: Any, **kwargs: Any) -> Any:
            outputs, found = original(*args, **kwargs)
            print(found, file=sys.stderr)
            return outputs, found
        _kernel.run = reporting
    try:
        runpy.run_path(path, run_name="__main__")
    except NKIError as error:
        location = f"{error.file}:{error.line}: " if error.file else ""
        separator = " " if error.reason.startswith("is ") else ": "
        print(f"{location}error: {error.api + separator if error.api else ''}{error.reason}", file=sys.stderr)
        return 1
    return 0


def main(arguments: list[str] | None = None) -> int:
    """``python -m vtrn.nki``: runs the command of ``arguments`` (sys.argv's by default); the exit status."""
    arguments = list(sys.argv[1:] if arguments is None else arguments)
    if not arguments or arguments[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if arguments else 2
    command = arguments.pop(0)
    if command == "run":
        return _run(arguments)
    if command == "bench":
        from ._bench import bench
        bench()
        return 0
    print(f"vtrn.nki: unknown command {command!r}\n{__doc__}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
