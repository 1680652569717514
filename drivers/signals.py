"""Stopping safely on a signal while devices are programmed.

Inside `deferred_interrupts()`, the first SIGINT or SIGTERM is held: the device being programmed is finished
(and journaled by the caller) and `check()`, called between devices, then raises KeyboardInterrupt, so the
run stops with the chip in a state the journal describes. A second signal raises KeyboardInterrupt at once;
either way the caller's safety net (drivers.crossbar's `_safe`) ramps every output to 0 V and switches it off.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Deferred:
    def __init__(self):
        self.pending: int | None = None

    def check(self) -> None:
        """Raise KeyboardInterrupt if a signal arrived (call it between devices)."""
        if self.pending is not None:
            raise KeyboardInterrupt(f"signal {signal.Signals(self.pending).name} while programming")


@contextmanager
def deferred_interrupts():
    state = Deferred()
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def hold(signum, _frame):
        if state.pending is not None:
            raise KeyboardInterrupt(f"second signal {signal.Signals(signum).name}: stopping at once")
        state.pending = signum

    old = {s: signal.signal(s, hold) for s in SIGNALS}
    try:
        yield state
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    state.check()  # a signal during the last device: stop now that it is done
