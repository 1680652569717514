"""Keithley 707B / 708B switching matrix mainframe, TSP commands.

Reference: Series 707B/708B Reference Manual (707B-901-01), section "TSP command
reference": channel.close(), channel.open(), channel.exclusiveclose(), channel.getclose(),
errorqueue.next(), reset(). Channels are named slot-row-column, e.g. "1A01".
"""

import re

from drivers.session import Instrument, TspErrorQueue

CHANNEL_NAME = re.compile(r"^[1-6][A-H](0[1-9]|[1-9][0-9])$")
LINE_NAME = re.compile(r"^([1-6]):(0[1-9]|[1-9][0-9])$")


class Keithley707B(TspErrorQueue, Instrument):
    KIND = "keithley707b"
    ROLE = "switch"
    IDN_MATCH = "MODEL 70"
    CMD = {
        "reset": "reset()",
        "open_all": 'channel.open("allslots")',
        "exclusive_close": 'channel.exclusiveclose("{ch}")',
        "close": 'channel.close("{ch}")',
        "open": 'channel.open("{ch}")',
        "get_closed": 'print(channel.getclose("allslots"))',
    }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.closed: str | None = None
        self.closed_set: frozenset[str] | None = None  # close_exactly's crosspoints (a programmer's route)

    @staticmethod
    def crosspoint(bus: str, line: str) -> str:
        """The crosspoint joining matrix row `bus` (A..H) to the card column `line` ("slot:column", e.g. 1:01)."""
        m = LINE_NAME.match(line)
        if not m or bus not in "ABCDEFGH" or len(bus) != 1:
            raise ValueError(f"crosspoint: row {bus!r} and line {line!r}: a 707B row is A..H, a line slot:column "
                             "(e.g. 1:01)")
        return f"{m.group(1)}{bus}{m.group(2)}"

    def close_exactly(self, channels: list[str]) -> None:
        """Close exactly these crosspoints, every other one open (one exclusiveclose), and wait for the relays.
        Skipped when they are the ones closed already."""
        want = frozenset(self.validate(ch) for ch in channels)
        if want == self.closed_set:
            return
        self.closed, self.closed_set = None, want  # the intent first: a reconnect during the sync restores it
        self.write(self._exclusive(want))
        self.sync()

    def _exclusive(self, channels: frozenset[str]) -> str:
        """exclusiveclose of these crosspoints; with none, open every one (an empty channel list is an error)."""
        return self.CMD["exclusive_close"].format(ch=",".join(sorted(channels))) if channels else self.CMD["open_all"]

    @staticmethod
    def validate(route: str) -> str:
        if not CHANNEL_NAME.match(route):
            raise ValueError(f"route {route!r}: a 707B/708B channel is slot, row letter, two-digit column (e.g. 1A01)")
        return route

    def connect(self) -> None:
        self.identify()
        self.write(self.CMD["reset"])
        self.configure(self.CMD["open_all"])

    def route(self, channel: str) -> None:
        """Close exactly this crosspoint (opening every other) and wait until the relays have switched.

        Skipped when it is already the one closed. The *OPC? matters: another instrument reads the node next,
        and its query must not overtake the switching.
        """
        if self.closed == channel:
            return
        self.closed_set = None
        self.closed = self.validate(channel)  # the intent first: a reconnect during the sync restores it
        self.write(self.CMD["exclusive_close"].format(ch=channel))
        self.sync()

    def set_crosspoints(self, channels: list[str], closed: bool) -> None:
        """Close (or open) these crosspoints, leaving the others as they are, and wait for the relays."""
        for ch in channels:
            self.write(self.CMD["close" if closed else "open"].format(ch=self.validate(ch)))
        self.sync()

    def closed_channels(self) -> str:
        return self.query(self.CMD["get_closed"])

    def reconcile(self, command: str, lost: list[str]) -> None:
        """After a reconnect: the routed crosspoint is read back and closed again if a lost write left it open."""
        if self.closed_set is not None:
            got_set = set(self.closed_channels().strip().split(";")) - {"nil", ""}
            if got_set != self.closed_set:
                self.rewrite_after_readback(self._exclusive(self.closed_set))
                self.sync()
            return
        if self.closed is None:
            return
        got = self.closed_channels().strip()
        if got != self.closed:
            self.rewrite_after_readback(self.CMD["exclusive_close"].format(ch=self.closed))
            self.sync()

    def make_safe(self) -> list[str]:
        closed = self.closed_channels().strip()
        self.shutdown()
        return [f"{self.name}: closed {closed}"] if closed and closed.lower() != "nil" else []

    def shutdown(self) -> None:
        self.write(self.CMD["open_all"])
        self.closed, self.closed_set = None, None
        # A query at the end: the instrument has acted on every write above, and reports any error.
        self.check_errors("shutdown")
