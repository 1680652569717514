"""Per-step recording of a training run: the step journal, and snapshot checkpoints every K steps or S seconds.

The trainer calls `begin` before and `end` after each step (hil.trainer.Trainer.train_epoch `hooks`). On the
simulator a step costs two small journal writes (the batch indices come from the CPU copy of the epoch's order:
nothing is read back from the device); conductances are copied to the host only for a snapshot.
"""

from __future__ import annotations

import time

from hil.journal import StepJournal
from hil.store import RunStore


class StepRecorder:
    def __init__(self, trainer, store: RunStore, journal: StepJournal, *, every_steps: int, every_s: float):
        self.trainer, self.store, self.journal = trainer, store, journal
        self.every_steps, self.every_s = every_steps, every_s
        self.backend = trainer.backend
        self.on_cpu = trainer.device.type == "cpu"
        self._since = 0
        self._t_last = time.monotonic()
        self.snapshots = 0

    def begin(self, epoch: int, pos: int, batch) -> None:
        self.journal.begin_step(self.trainer.step_count, epoch, pos, batch.numpy())

    def end(self, epoch: int, pos: int, correct, loss) -> None:
        step = self.trainer.step_count - 1
        devices = self.backend.drain_programmed() if hasattr(self.backend, "drain_programmed") else []
        targets = self.backend.step_targets() if hasattr(self.backend, "step_targets") else []
        # The step's free-phase counts only where reading them costs nothing (CPU tensors).
        c = float(correct.sum()) if self.on_cpu else None
        l = float(loss.sum()) if self.on_cpu else None
        self.journal.end_step(step, c, l, devices, targets)
        self._since += 1
        now = time.monotonic()
        if ((self.every_steps and self._since >= self.every_steps)
                or (self.every_s and now - self._t_last >= self.every_s)):
            self.store.save_checkpoint(self.trainer.snapshot())
            self.journal.snapshot(step, epoch, pos + 1)
            self.snapshots += 1
            self._since, self._t_last = 0, now

    def epoch_checkpoint(self, epoch: int) -> None:
        """The end-of-epoch checkpoint (written by the runner) is a snapshot too."""
        self.journal.snapshot(self.trainer.step_count - 1, epoch + 1, 0)
        self._since, self._t_last = 0, time.monotonic()
