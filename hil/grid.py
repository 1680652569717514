"""A sweep over any config fields: cells, the groups they train in, chunks of replicas, and the per-cell table.

`--vary KEY=V1,V2,...` names a dotted RunConfig field (or `ep.eta_eff`, the paper's eta/beta: a cell with
eta_eff and beta trains with eta = eta_eff * beta). A cell is one combination of the varied values.
The simulator varies read noise sigma and N per replica, so cells that differ only there (and every trial's
seed) train together as replicas of one run: a *group* (one RunConfig). A group's replicas are split into
chunks of at most --max-replicas; a chunk is what an executor runs (hil.executors). The chunks are fixed by
the grid and --max-replicas alone, so the accuracies do not depend on which executor trained them.
"""

from __future__ import annotations

import itertools
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from hil.core.config import ConfigError, RunConfig, build_config, data_defaults
from hil.core.seeds import replica_seeds
from hil.sweep import PointSummary, Trial, summarize, write_csv

#: Fields the simulator varies per replica: cells differing only in these share one run (group).
PER_REPLICA = ("noise.sigma", "noise.samples")
#: Fields the data-sized defaults (gamma, eta, diodes) depend on: the input count and the depth.
DATA_SHAPING = ("data.dataset", "data.image_size", "network.hidden")
#: eta/beta, as the paper defines the learning rate: not a RunConfig field, it sets ep.eta per cell.
ETA_EFF = "ep.eta_eff"


def frozen(value: Any) -> Any:
    """A varied value as a cell holds it: lists (network.hidden=[64,32]) become tuples, so cells can be grouped."""
    return tuple(frozen(v) for v in value) if isinstance(value, (list, tuple)) else value


def shown(value: Any) -> str:
    """A cell value as --vary writes it: (64, 32) as [64,32]; numbers in full."""
    if isinstance(value, tuple):
        return "[" + ",".join(shown(v) for v in value) + "]"
    return str(value)


class GridError(ConfigError):
    """A --vary that cannot define a grid (unknown field, key given twice, bad value); printed as one line."""


def _split_top_level(raw: str) -> list[str]:
    """Split on the commas outside brackets: `[64,32],[64]` -> `[64,32]`, `[64]` (list-valued fields)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(raw):
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == "," and depth == 0:
            parts.append(raw[start:i])
            start = i + 1
    parts.append(raw[start:])
    return parts


def parse_vary(text: str) -> tuple[str, list[Any]]:
    """`KEY=V1,V2,...` -> (KEY, [values]); each value read as YAML (1e-3 a float, 16 an int, true a bool)."""
    if "=" not in text:
        raise GridError(f"--vary: expected KEY=V1,V2,... (e.g. ep.beta=0.5,1), got {text!r}")
    key, raw = (s.strip() for s in text.split("=", 1))
    parts = [p.strip() for p in _split_top_level(raw)]
    if not key or not raw or any(not p for p in parts):
        raise GridError(f"--vary {text}: expected KEY=V1,V2,... with no empty value")
    try:
        values = [yaml.safe_load(p) for p in parts]
    except yaml.YAMLError:
        raise GridError(f"--vary {text}: a value is not readable (lists in brackets: network.hidden=[64],[64,32])") from None
    if len(set(map(repr, values))) != len(values):
        raise GridError(f"--vary {key}: a value is listed twice ({raw})")
    return key, values


def config_leaf(dotted: str) -> FieldInfo | None:
    """The leaf field of RunConfig that `dotted` names (network.init_scale), None for network or network.x."""
    model: type[BaseModel] = RunConfig
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        info = model.model_fields.get(part)
        if info is None:
            return None
        sub = info.annotation
        is_model = isinstance(sub, type) and issubclass(sub, BaseModel)
        if i == len(parts) - 1:
            return None if is_model else info
        if not is_model:
            return None
        model = sub  # type: ignore[assignment]  # narrowed by issubclass above
    return None


def config_field_exists(dotted: str) -> bool:
    """Whether `dotted` names a leaf field of RunConfig (network.init_scale yes, network or network.x no)."""
    return config_leaf(dotted) is not None


def list_valued(info: FieldInfo) -> bool:
    ann = info.annotation
    return any(typing.get_origin(t) is list for t in (ann, *typing.get_args(ann)))


def check_vary(vary: Sequence[tuple[str, list[Any]]]) -> dict[str, list[Any]]:
    """The varied keys in the order given; a key twice, an unknown field or eta with eta_eff is an error."""
    out: dict[str, list[Any]] = {}
    for key, values in vary:
        if key in out:
            raise GridError(f"--vary {key}: given twice; give each key once with all its values")
        if key != ETA_EFF and not config_field_exists(key):
            raise GridError(f"--vary {key}: not a config field (dotted path like ep.beta, noise.sigma, "
                            f"network.init_scale, or {ETA_EFF})")
        if key in ("train.replicas", "name", "runs_dir"):
            raise GridError(f"--vary {key}: set by the sweep itself, cannot be varied")
        info = config_leaf(key)
        if info is not None and list_valued(info) and any(v is not None and not isinstance(v, list) for v in values):
            raise GridError(f"--vary {key}: each value is a list, written in brackets: {key}=[64],[64,32]")
        out[key] = list(values)
    if ETA_EFF in out and "ep.eta" in out:
        raise GridError(f"--vary {ETA_EFF} and ep.eta: both set the learning rate; vary one")
    return out


@dataclass
class GridTrial(Trial):
    """One network of the grid: its cell (varied key -> value, in --vary order) besides sigma, N and seed."""

    cell: tuple[tuple[str, Any], ...] = ()


@dataclass
class Chunk:
    """Replicas of one group trained at once: the unit an executor runs (picklable, for Ray)."""

    index: int
    group: int
    config: dict[str, Any]  # the group's RunConfig, model_dump(mode="json")
    trials: list[int]  # positions in Grid.trials
    sigmas: list[float] = field(default_factory=list)
    samples: list[int] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)


class Grid:
    """The cells of a --vary grid over a base config, the group configs, and the trials in training order."""

    def __init__(self, base: RunConfig, vary: dict[str, list[Any]], trials: int):
        self.base, self.vary, self.trials_per_cell = base, dict(vary), trials
        self.keys = list(vary)
        self._refuse_mis_sized()
        self.group_keys = [k for k in self.keys if k not in PER_REPLICA]
        self.groups: list[tuple[tuple[str, Any], ...]] = [
            tuple(zip(self.group_keys, combo)) for combo in itertools.product(*(vary[k] for k in self.group_keys))]
        self.configs = [self.config_for(dict(g)) for g in self.groups]  # validates every cell before training
        self.trials: list[GridTrial] = []
        self.group_of: list[int] = []
        replica_keys = [k for k in self.keys if k in PER_REPLICA]
        for gi, (group, cfg) in enumerate(zip(self.groups, self.configs)):
            for combo in itertools.product(*(vary[k] for k in replica_keys)):
                per = dict(zip(replica_keys, combo))
                values = dict(group) | per
                cell = tuple((k, frozen(values[k])) for k in self.keys)
                sigma = float(per.get("noise.sigma", cfg.noise.sigma))
                n = int(per.get("noise.samples", cfg.noise.initial_samples))
                seeds = replica_seeds(cfg.train.seed, trials)
                for t in range(trials):
                    self.trials.append(GridTrial(sigma, n, t, seeds[t], cell=cell))
                    self.group_of.append(gi)

    def _refuse_mis_sized(self) -> None:
        """A cell that changes the data or the depth would keep the gain, eta and diodes sized to the base's (a
        width alone changes none of them): refuse, naming the settings to give, rather than train mis-sized cells."""
        varied = set(self.keys) | ({"ep.eta"} if ETA_EFF in self.keys else set())
        sized = sorted(set(self.base._sized_to_data) - varied)
        resizing = [k for k in self.keys if k in DATA_SHAPING]
        if not (sized and resizing):
            return
        tree = self.base.model_dump(mode="json")
        for dotted in sized:  # the base as given, before sizing
            section, name = dotted.split(".")
            tree[section].pop(name, None)
        for key in resizing:
            for value in self.vary[key]:
                section, name = key.split(".")
                cell = {**tree, section: {**tree[section], name: value}}
                changed = [k for k, v in data_defaults(cell).items() if k in sized and v != self.base_value(k)]
                if changed:
                    raise GridError(f"--vary {key}={shown(frozen(value))}: {', '.join(changed)} would need other values "
                                    f"than the base's (sized to its data and depth); set them (--gamma, --eta, "
                                    "--bipolar/--no-bipolar) or vary them too")

    def base_value(self, dotted: str) -> Any:
        section, name = dotted.split(".")
        return getattr(getattr(self.base, section), name)

    def config_for(self, group: dict[str, Any]) -> RunConfig:
        """The RunConfig of one group: the base with its varied values (eta_eff -> eta = eta_eff * beta)."""
        over = {k: v for k, v in group.items() if k != ETA_EFF}
        if ETA_EFF in group:
            beta = over.get("ep.beta", self.base.ep.beta)
            eta_eff = group[ETA_EFF]
            if not (isinstance(eta_eff, (int, float)) and isinstance(beta, (int, float)) and eta_eff > 0):
                raise GridError(f"--vary {ETA_EFF}: a learning rate > 0 (got {eta_eff!r})")
            over["ep.eta"] = float(eta_eff) * float(beta)
        tree = self.base.model_dump(mode="json")
        try:
            return build_config(tree, over)
        except ConfigError as err:
            where = ", ".join(f"{k}={v}" for k, v in group.items())
            raise GridError(f"--vary: the cell {where}: {err}") from None

    def chunks(self, cap_of_group: Sequence[int]) -> list[Chunk]:
        """Each group's trials in chunks of at most cap_of_group[group] replicas, in training order."""
        out: list[Chunk] = []
        for gi, cfg in enumerate(self.configs):
            idx = [i for i, g in enumerate(self.group_of) if g == gi]
            cap = max(1, int(cap_of_group[gi]))
            for s in range(0, len(idx), cap):
                part = idx[s:s + cap]
                out.append(Chunk(len(out), gi, cfg.model_dump(mode="json"), part,
                                 [self.trials[i].sigma for i in part], [self.trials[i].samples for i in part],
                                 [self.trials[i].seed for i in part]))
        return out

    def signature(self) -> list[tuple]:
        """What a resumed sweep must match: every trial's cell and seed."""
        return [(repr(t.cell), t.sigma, t.samples, t.seed) for t in self.trials]


@dataclass
class CellSummary:
    cell: tuple[tuple[str, Any], ...]
    point: PointSummary


def summarize_cells(trials: Sequence[GridTrial], threshold: float) -> list[CellSummary]:
    """Per cell: convergence rate (final test accuracy >= threshold), mean, std, best and best-five accuracy."""
    cells = list(dict.fromkeys(t.cell for t in trials))  # hashable: frozen() values
    return [CellSummary(c, summarize([t for t in trials if t.cell == c], threshold)[0]) for c in cells]


def write_grid_trials_csv(path, keys: Sequence[str], trials: Sequence[GridTrial]) -> None:
    """One row per network: its varied values, sigma, N, trial, seed and accuracies (epochs_done: 0 not yet run)."""
    write_csv(path, [*keys, "sigma_V", "samples", "trial", "seed", "diverged", "final_test_acc",
                     "test_acc_per_epoch", "epochs_done"],
              ([*(shown(v) for _, v in t.cell), t.sigma, t.samples, t.trial, t.seed, int(t.diverged), f"{t.final:.4f}",
                " ".join(f"{a:.4f}" for a in t.test_acc), len(t.test_acc)] for t in trials))


def write_grid_table_csv(path, keys: Sequence[str], rows: Sequence[CellSummary]) -> None:
    write_csv(path, [*keys, "sigma_V", "samples", "trials", "converged", "convergence_rate", "mean_test_acc",
                     "std_test_acc", "best_test_acc", "mean_best5_test_acc"],
              ([*(shown(v) for _, v in r.cell), r.point.sigma, r.point.samples, r.point.trials, r.point.converged,
                f"{r.point.convergence_rate:.4f}", f"{r.point.mean_acc:.4f}", f"{r.point.std_acc:.4f}",
                f"{r.point.best_acc:.4f}", f"{r.point.mean_best5:.4f}"] for r in rows))


def format_grid_summary(keys: Sequence[str], rows: Sequence[CellSummary], threshold: float) -> str:
    head = "  ".join(f"{k:>14}" for k in keys)
    lines = [f"{head}  {'converged':>10}  {'rate':>6}  {'mean acc':>8}  {'best':>6}"]
    for r in rows:
        vals = "  ".join(f"{shown(v):>14}" for _, v in r.cell)
        p = r.point
        lines.append(f"{vals}  {p.converged:>4d}/{p.trials:<5d}  {100 * p.convergence_rate:>5.0f}%  "
                     f"{100 * p.mean_acc:>7.1f}%  {100 * p.best_acc:>5.1f}%")
    lines.append(f"(converged: final test accuracy >= {100 * threshold:g}%)")
    return "\n".join(lines)


def heatmap_axes(keys: Sequence[str]) -> tuple[str | None, list[str]] | None:
    """(panel key, [x key, y key]) of the heat maps: one panel per sigma (if varied), x/y the other varied keys.

    Sigma alone is the x axis of one panel. None when there are more than two other keys (a heat map cannot
    show them)."""
    panel = "noise.sigma" if "noise.sigma" in keys else None
    if list(keys) == ["noise.sigma"]:
        return None, ["noise.sigma"]  # sigma alone: one row, sigma along x
    others = [k for k in keys if k != panel]
    if not 1 <= len(others) <= 2:
        return None
    return panel, others
