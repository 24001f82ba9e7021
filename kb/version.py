"""kb's version, in a module of its own (httpx's `_version.py`): modules that record it import it
from here, so none of them needs the package's `__init__`, which imports them."""

__version__ = "0.1.0"
