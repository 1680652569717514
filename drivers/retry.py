"""The fault policy of one instrument session: which failures are transient, which stop the run.

Transient (retried once, logged and counted): a query that timed out, came back as garbage (bytes no
instrument sends: control characters), or found the connection dropped. Before the retry the interface is
cleared by reopening the session (this drops any late reply still on its way, and reconnects a dropped
socket), then the driver reads its state back (`Instrument.reconcile`): a setting lost with the connection
is written again only after it was read back wrong, and settings back at their power-on defaults mean the
instrument was reset, which stops the run.

Fatal (`InstrumentFault`, the run stops with every output ramped to 0 and off): a second failure of the same
query, an instrument reset, a compliance trip while measuring, an error the instrument queued after a write.
A write whose confirmation was lost (`UnconfirmedWrite`) is never sent again blindly: the caller reads the
state back and decides (write-verify reads the device's conductance).
"""

from __future__ import annotations

from drivers.errors import InstrumentError

#: fault kinds, as logged in commands.jsonl and named in run.json
TIMEOUT = "no reply before the timeout"
GARBAGE = "garbage reply"
DROPPED = "connection dropped"
REFUSED = "connection refused"


class TransientFault(InstrumentError):
    """One failed exchange that a retry after clearing the interface may cure."""

    def __init__(self, kind: str, detail: str = ""):
        super().__init__(f"{kind}{': ' + detail if detail else ''}")
        self.kind = kind


class InstrumentFault(InstrumentError):
    """A fault that stops the run: names the instrument, the command and the fault (one line)."""

    def __init__(self, instrument: str, command: str, fault: str):
        super().__init__(f"{instrument}: {fault} (command {command!r})")
        self.instrument, self.command, self.fault = instrument, command, fault

    def record(self) -> dict:
        """What run.json keeps of it."""
        return {"instrument": self.instrument, "command": self.command, "fault": self.fault}


class UnconfirmedWrite(InstrumentError):
    """A non-idempotent command whose reply was lost: it may or may not have been carried out."""

    def __init__(self, instrument: str, command: str, kind: str):
        super().__init__(f"{instrument}: {kind} after {command!r}; its effect is unknown until read back")
        self.instrument, self.command, self.kind = instrument, command, kind


def is_garbage(reply: str) -> bool:
    """A reply with control characters (other than tab) or DEL: no instrument of ours sends those."""
    return any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in reply)


def classify(err: BaseException) -> str:
    """The transient kind of an exception raised by a VISA or serial read/write."""
    text = f"{err.__class__.__name__} {err}".lower()
    if "timeout" in text or "timed out" in text or "no reply" in text:
        return TIMEOUT
    if isinstance(err, ConnectionRefusedError) or "refused" in text:
        return REFUSED  # nothing listens at the address (pyvisa-py opens a socket at its first command)
    return DROPPED
