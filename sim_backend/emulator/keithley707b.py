"""Emulated Keithley 707B switching matrix mainframe (one 7174A-style 8x12 card in slot 1), TSP.

The bound `channel` object follows the Series 707B/708B Reference Manual (707B-901-01), section 8 "TSP
command reference": channel.open(), channel.close(), channel.exclusiveclose(), channel.exclusiveslotclose(),
channel.getclose(), channel.getstate(), channel.reset(), channel.connectrule; channel lists are strings of
comma-separated slot-row-column names ("1A01,1B03"), "slotN" or "allslots". Six 8x12 cards (slots 1-6,
the mainframe's six). A switching operation takes the relay settle time to open and to close (3 ms each, the
7174A card's specification); one that both opens and closes takes both under the default break-before-make
rule and make-before-break, the longer one with channel.connectrule = channel.OFF (707B-901-01 Rev. B,
section 7, channel.connectrule); an operation that changes no relay takes none.
"""

from __future__ import annotations

import re

from sim_backend.emulator.tsp import Bound, TspError, TspInstrument

CHANNEL = re.compile(r"^([1-6])([A-H])(\d\d)$")
ACTUATION_S = 3e-3
ROWS, COLUMNS, SLOTS = "ABCDEFGH", 12, (1, 2, 3, 4, 5, 6)


class Channel(Bound):
    CONSTANTS = {"BREAK_BEFORE_MAKE": 1, "MAKE_BEFORE_BREAK": 2, "OFF": 0}

    def __init__(self, inst):
        self._inst = inst
        self.connectrule = 1
        self.connectsequential = 0

    def _list(self, spec) -> set[str]:
        if not isinstance(spec, str):
            raise TspError(-286, f"TSP Runtime error; channel list must be a string, got {spec!r}")
        out: set[str] = set()
        for item in (x.strip() for x in spec.split(",")):
            low = item.lower()
            if low == "allslots":
                return self._all()
            if low.startswith("slot") and low[4:].isdigit():
                if int(low[4:]) not in SLOTS:
                    raise TspError(1115, f"Parameter error; {item} is not installed")
                out |= self._all()
                continue
            m = CHANNEL.match(item.upper())
            if not m or int(m.group(1)) not in SLOTS or not 1 <= int(m.group(3)) <= COLUMNS:
                raise TspError(1115, f"Parameter error; invalid channel {item!r}")
            out.add(item.upper())
        return out

    @staticmethod
    def _all() -> set[str]:
        return {f"{s}{r}{c:02d}" for s in SLOTS for r in ROWS for c in range(1, COLUMNS + 1)}

    def _switch(self, closed: set[str]) -> None:
        opening, closing = bool(self._inst.closed - closed), bool(closed - self._inst.closed)
        settle = ACTUATION_S * (opening + closing) if self.connectrule else ACTUATION_S * (opening or closing)
        self._inst.closed = closed
        self._inst.clock.advance(settle)
        self._inst.bench.set_routes(self._inst.name, closed)

    def close(self, spec):
        self._switch(self._inst.closed | self._list(spec))

    def open(self, spec):
        self._switch(self._inst.closed - self._list(spec))

    def exclusiveclose(self, spec):
        self._switch(self._list(spec))

    def exclusiveslotclose(self, spec):
        self._switch(self._list(spec))

    def getclose(self, spec):
        """The closed channels among spec, ';'-separated, or nil when none."""
        closed = sorted(self._inst.closed & self._list(spec))
        return ";".join(closed) if closed else None

    def getstate(self, spec):
        return ",".join("1" if c in self._inst.closed else "0" for c in sorted(self._list(spec)))

    def reset(self, spec="allslots"):
        self._switch(self._inst.closed - self._list(spec))


class Emulated707B(TspInstrument):
    KIND = "keithley707b"
    MODEL, SERIAL, VERSION = "707B", "04123456", "1.7.0"

    def __init__(self, name, bench, limits=None):
        self.closed: set[str] = set()
        super().__init__(name, bench, limits)

    def bind(self, g) -> None:
        g.channel = Channel(self)

    def reset(self) -> None:
        self.closed = set()
        self.bench.set_routes(self.name, self.closed)

    def outputs(self) -> dict:
        return {"closed": sorted(self.closed)} if self.closed else {}
