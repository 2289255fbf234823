"""The package as its users' tools see it: a py.typed marker (PEP 561), and a docstring on every
module and every public function, class, method and property (Scripts/test runs mypy --strict on
it as a step of its own)."""

import importlib
import inspect
import os
import pkgutil

import vtrn
import vtrn.nki

from support import PYTHON_FOLDER


def modules():
    for package in (vtrn, vtrn.nki):
        yield package
        for info in pkgutil.iter_modules(package.__path__):
            yield importlib.import_module(f"{package.__name__}.{info.name}")


def undocumented():
    missing = []
    for module in modules():
        if not module.__doc__:
            missing.append(module.__name__)
        for name, value in vars(module).items():
            if name.startswith("_") or getattr(value, "__module__", None) != module.__name__:
                continue
            if not (inspect.isfunction(value) or inspect.isclass(value)):
                continue
            if not value.__doc__:
                missing.append(f"{module.__name__}.{name}")
            if inspect.isclass(value):
                for member, item in vars(value).items():
                    if member.startswith("_"):
                        continue
                    if isinstance(item, (staticmethod, classmethod)):
                        item = item.__func__
                    if (inspect.isfunction(item) or isinstance(item, property)) and not item.__doc__:
                        missing.append(f"{module.__name__}.{name}.{member}")
    return missing


def test_every_public_name_has_a_docstring():
    assert undocumented() == []


def test_the_package_says_it_is_typed():
    assert os.path.isfile(os.path.join(PYTHON_FOLDER, "vtrn", "py.typed"))
