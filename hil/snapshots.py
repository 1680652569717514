"""Per-step recording of a training run: the step journal, and snapshot checkpoints every K steps or S seconds.

The trainer calls `begin` before and `end` after each step (hil.trainer.Trainer.train_epoch `hooks`). On the
simulator a step costs two small journal writes (the batch indices come from the CPU copy of the epoch's order:
nothing is read back from the device); conductances are copied to the host only for a snapshot.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from hil.core.backend import StepJournaling
from hil.journal import StepJournal


class StepRecorder:
    """save(state): writes a snapshot checkpoint (`Trainer.snapshot()`); step_offset: added to the trainer's step
    count in the journal (a sweep's chunks each count from 0)."""

    def __init__(self, trainer, save: Callable[[dict], None], journal: StepJournal, *, every_steps: int,
                 every_s: float, step_offset: int = 0):
        self.trainer, self.save, self.journal = trainer, save, journal
        self.every_steps, self.every_s = every_steps, every_s
        self.offset = step_offset
        self.backend = trainer.backend
        self.on_cpu = trainer.device.type == "cpu"
        self._since = 0
        self._t_last = time.monotonic()
        self.snapshots = 0

    def begin(self, epoch: int, pos: int, batch) -> None:
        step = self.offset + self.trainer.step_count
        self.journal.begin_step(step, epoch, pos, batch.numpy())
        if isinstance(self.backend, StepJournaling):  # a bench: each programmed device journaled as it is done
            self.backend.on_programmed = lambda d: self.journal.record_devices(step, [d])

    def end(self, epoch: int, pos: int, correct, loss) -> None:
        step = self.offset + self.trainer.step_count - 1
        # A bench journals each device as it is programmed (`begin`), and here the step's targets.
        targets = self.backend.step_targets() if isinstance(self.backend, StepJournaling) else []
        # The step's free-phase counts only where reading them costs nothing (CPU tensors).
        c = float(correct.sum()) if self.on_cpu else None
        l = float(loss.sum()) if self.on_cpu else None
        self.journal.end_step(step, c, l, targets=targets)
        self._since += 1
        now = time.monotonic()
        if ((self.every_steps and self._since >= self.every_steps)
                or (self.every_s and now - self._t_last >= self.every_s)):
            self.save(self.trainer.snapshot())
            self.journal.snapshot(step, epoch, pos + 1)
            self.snapshots += 1
            self._since, self._t_last = 0, now

    def epoch_checkpoint(self, epoch: int) -> None:
        """The end-of-epoch checkpoint (written by the runner) is a snapshot too."""
        self.journal.snapshot(self.offset + self.trainer.step_count - 1, epoch + 1, 0)
        self._since, self._t_last = 0, time.monotonic()


def bench_plan(state: dict, journal: StepJournal, trainer) -> dict:
    """Where a bench run stands after its last journaled step: the checkpoint's state carried forward by each
    finished step after it (verified conductances of the devices it programmed, its targets, its counts).

    Returns weights and pending (normalized S, per layer, float64), step_count, in_epoch (or None: start the
    epoch after `state['epoch']`), and touched: the devices [(layer, row, col)] the unfinished step programmed.
    """
    weights = [w.detach().to(torch.float64).clone() for w in state["weights"]]
    pending = ([p.detach().to(torch.float64).clone() for p in state["pending"]] if "pending" in state
               else [torch.zeros_like(w) for w in weights])
    first = int(state.get("step", 0))
    done = [s for s in journal.steps(after=first - 1) if s["done"]]
    in_epoch = state.get("in_epoch")
    last = None
    for s in done:
        if last is not None and s["step"] != last["step"] + 1:
            break  # a gap: nothing after it is trusted
        for layer, i, j, _target, verified, _pulses in journal.devices(s["step"]):
            weights[layer][0, i, j] = verified
        targets = journal.targets(s["step"])
        for layer, flat in targets.items():
            pending[layer] = torch.from_numpy(flat.copy()).reshape(weights[layer].shape) - weights[layer]
        if in_epoch is None or int(in_epoch["epoch"]) != s["epoch"]:
            in_epoch = {"epoch": s["epoch"], "pos": 0, "order": trainer.epoch_order(s["epoch"]), "seconds": 0.0,
                        "correct": torch.zeros(trainer.R, dtype=torch.long),
                        "loss": torch.zeros(trainer.R, dtype=trainer.dtype)}
        else:
            in_epoch = {**in_epoch, "correct": in_epoch["correct"].clone(), "loss": in_epoch["loss"].clone()}
        in_epoch["pos"] = s["pos"] + 1
        in_epoch["correct"] += int(round(s["correct"] or 0))
        in_epoch["loss"] += float(s["loss"] or 0.0)
        last = s
    step_count = last["step"] + 1 if last is not None else first
    unfinished = journal.unfinished()
    touched = ([(l, i, j) for l, i, j, *_ in journal.devices(unfinished)]
               if unfinished is not None and unfinished >= step_count else [])
    return {"weights": weights, "pending": pending, "step_count": step_count, "in_epoch": in_epoch,
            "touched": sorted(set(touched))}
