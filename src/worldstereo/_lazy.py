"""Lazy module attributes: a package's public names imported from their sub-modules on first use.

Used by the ``__init__`` modules of :mod:`worldstereo`, :mod:`worldstereo.io` and
:mod:`worldstereo.models` so that importing a package stays cheap and an optional dependency of one
sub-module (PyAV, diffusers, ...) never affects another.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Dict, List, Mapping, MutableMapping, Tuple

__all__ = ["lazy_exports"]


def lazy_exports(package: str, namespace: MutableMapping[str, Any], exports: Mapping[str, str]
                 ) -> Tuple[Callable[[str], Any], Callable[[], List[str]]]:
    """Module-level ``__getattr__`` and ``__dir__`` for ``package``.

    Args:
        package: the package's ``__name__``.
        namespace: the package's ``globals()``; a name is cached there after its first import.
        exports: public name -> module that defines it (absolute, or relative to ``package`` when
            it starts with ``"."``).

    Returns:
        ``(__getattr__, __dir__)`` to assign at the package's top level.
    """
    table: Dict[str, str] = dict(exports)

    def __getattr__(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        namespace[name] = value
        return value

    def __dir__() -> List[str]:
        return sorted(set(namespace) | set(table))

    return __getattr__, __dir__
