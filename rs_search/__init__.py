"""rs-search: architecture-and-recipe search for ResNet-RS image classifiers.

Importing this package touches no database, GPU or network (DESIGN.md section 2).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("rs-search")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
