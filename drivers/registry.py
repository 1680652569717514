"""The instrument registry: each driver class declares its lab-config kind once, and everything else looks it up.

A driver class states `KIND` (the `kind:` string of the lab config), `ROLE` (what it does on the bench: a DAC
that clamps inputs, an SMU that reads nodes, a switch matrix, a programming board) and its hardware range
(`MAX_V`, `MAX_A`; None: not a source of that quantity). Declaring `KIND` registers the class
(`Instrument.__init_subclass__`). The lab config's allowed kinds and limit checks, the bench's connection
dispatch and the emulated lab's choice of emulated instrument all come from here, so adding an instrument is a
new driver file (and an emulated one), nothing else.

The built-in drivers are found by importing every module of the `drivers` package the first time a kind is
looked up (lazily: the lab config module itself is one of them).
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from typing import TYPE_CHECKING, Literal, TypeVar

if TYPE_CHECKING:
    from drivers.session import Instrument

Role = Literal["dac", "smu", "switch", "board"]
ROLES: tuple[Role, ...] = ("dac", "smu", "switch", "board")

T = TypeVar("T", bound=type)


class KindRegistry(dict[str, T]):
    """kind -> class, filled by class declarations; `package` is imported whole on the first lookup."""

    def __init__(self, what: str, package: str):
        super().__init__()
        self.what, self.package = what, package
        self._discovered = False

    def register(self, kind: str, cls: T) -> None:
        old = dict.get(self, kind)
        if old is not None and old.__qualname__ != cls.__qualname__:
            raise TypeError(f"{self.what} kind {kind!r}: declared by both {old.__module__}.{old.__qualname__} "
                            f"and {cls.__module__}.{cls.__qualname__}")
        self[kind] = cls

    def discover(self) -> None:
        """Import every module of the package once, so that its classes declare their kinds."""
        if self._discovered:
            return
        self._discovered = True
        pkg = importlib.import_module(self.package)
        for mod in pkgutil.iter_modules(pkg.__path__):
            importlib.import_module(f"{self.package}.{mod.name}")

    def lookup(self, kind: str) -> T:
        self.discover()
        if kind not in self:
            close = difflib.get_close_matches(kind, self.kinds(), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"kind {kind!r}: no {self.what} declares it (known: {', '.join(self.kinds())}){hint}")
        return self[kind]

    def kinds(self) -> list[str]:
        self.discover()
        return sorted(self)


#: every driver class that declares a KIND
DRIVERS: KindRegistry[type[Instrument]] = KindRegistry("driver", "drivers")


def driver_class(kind: str) -> type[Instrument]:
    """The driver class of a lab-config kind (ValueError naming the known kinds if none declares it)."""
    return DRIVERS.lookup(kind)
