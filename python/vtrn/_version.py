"""The package's version, which is that of the header it was written against (include/vtrn.h's
VTRN_VERSION_MAJOR/MINOR/PATCH; a test checks they agree). A literal in a module of its own, so
that packaging reads it (pyproject.toml) without importing the package, which loads libvtrn.so."""

__version__ = "0.2.0"
