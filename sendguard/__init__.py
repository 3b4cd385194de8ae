"""sendguard: a send proxy that checks every outbound message against policies."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sendguard")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
