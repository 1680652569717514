"""Typed run configuration (pydantic 2).

Every field documents its meaning and unit. Unknown keys are rejected so a
typo in a YAML file is an error, not a silently ignored setting.

Units: voltages in volts (V), conductances in siemens (S) of the simulated
network (the trainer works in these normalized units; a lab config maps them
to the bench's microsiemens and volts), currents in amperes (A).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

import torch
import yaml
from pydantic import BaseModel, Field, PrivateAttr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo

from hil.core.backend import node_sizes
from hil.core.devices.config import WRITE_VERIFY_MAX_PULSES, WRITE_VERIFY_MAX_REVERSALS, DeviceModelConfig
from hil.core.devices.store import resolve_device_model
from hil.core.mains import LINE_FREQUENCIES_HZ, check_line_frequency
from hil.core.schema import ConfigError, StrictModel, format_validation_error, read_yaml


def flag(name: str | None = None, *, metavar: str | None = None, simulated_only: bool = False,
         choices: tuple[float, ...] | None = None) -> dict[str, Any]:
    """A field's marker (its json_schema_extra) making it a `hil` run option: `--name` (default: the field's
    name, dashed), its help the first sentence of the field's description. simulated_only: it describes the
    simulator (its noise, devices or replicas) and a bench run refuses it (`refuse_on_bench`). choices: the
    allowed values of a float field (type checkers allow no float Literal)."""
    return {"flag": name or True, "metavar": metavar, "simulated_only": simulated_only,
            "choices": list(choices) if choices else None}


#: A marker for a field (or a whole section) that describes the simulator only, with no flag of its own.
SIMULATED_ONLY: dict[str, Any] = {"simulated_only": True}


class NetworkConfig(StrictModel):
    """The layered resistive network (Kendall et al. 2020; Scellier et al. 2023)."""

    hidden: list[int] = Field(json_schema_extra=flag(),
        default=[128],
        description="Hidden layer sizes, nodes per layer (as a flag: comma-separated, e.g. 256,128; none: no hidden "
        "layer). The input size comes from the dataset "
        "(doubled to [x, -x] in the crossbar) and the output size from its classes.",
    )
    input_gain: float = Field(json_schema_extra=flag("gamma"),
        default=64.0, gt=0,
        description="gamma: input voltage per unit of input, V. Inputs are clamped at "
        "gamma*[x, -x]. Hidden voltages scale as gamma*sqrt(sum x^2)/fan_in; 64 suits "
        "the 8x8 digits, the paper uses 500 for 28x28 images.",
    )
    bias: bool = Field(json_schema_extra=flag(), default=False, description="Add a trainable current source (A) at every hidden and output node.")
    bipolar: bool = Field(json_schema_extra=flag(),
        default=False,
        description="Half of each hidden layer gets reversed diodes (V <= 0) instead of ReLU (V >= 0).",
    )
    init: Literal["uniform", "symmetric"] = Field(json_schema_extra=flag(),
        default="uniform",
        description="Initial conductances, with c = init_scale: uniform draws U(0, c/sqrt(fan_in)) S, symmetric "
        "draws U(-c/sqrt(fan_in), c/sqrt(fan_in)) S clamped into [g_min, g_max]. Symmetric with c = 1 is the DRN "
        "code's init (rain-neuromorphics/energy-based-learning): about half the devices start at g_min. fan_in "
        "counts the doubled inputs.")
    init_scale: float = Field(json_schema_extra=flag(),
        default=0.7, gt=0,
        description="c: initial conductances are uniform on [0, c/sqrt(fan_in)] S (see init). Node voltages "
        "do not depend on c (Millman's ratio is scale-free); c sets how strong the nudge beta is "
        "against the ~c*sqrt(fan_in)/2 S already at each output node, and how large a relative "
        "step eta makes. 0.7 lets the paper's setting pass 80% after one Fashion-MNIST epoch.",
    )
    g_min: float = Field(json_schema_extra=flag(),
        default=1e-3, ge=0,
        description="Lowest device conductance, S; updates saturate here. Real devices never reach 0 (RRAM spans "
        "about 1-100 uS); above 0 it keeps every node's total conductance positive, so no node floats (0/0, a "
        "non-finite update) when training drives all its devices down. 1e-3 S is 1/18 to 1/62 of the initial "
        "scale c/sqrt(fan_in) of the input layer (28x28 images to the 8x8 digits).")
    g_max: float | None = Field(json_schema_extra=flag(), default=None, description="Highest device conductance, S "
                                "(unset: unbounded). A pulsed device model needs a top: unset, it is sized to the "
                                "network, 2.5 x its largest initial conductance c/sqrt(fan_in) (DEVICE_RANGE_FACTOR).")

    @model_validator(mode="after")
    def _check(self) -> NetworkConfig:
        if any(h < 1 for h in self.hidden):
            raise ValueError(f"hidden: every layer needs at least 1 node (got {self.hidden})")
        if self.bipolar and any(h < 2 for h in self.hidden):
            raise ValueError("bipolar: needs at least 2 nodes per hidden layer")
        if self.g_max is not None and self.g_max <= self.g_min:
            raise ValueError(f"g_max: must exceed g_min={self.g_min} (got {self.g_max})")
        return self


class RelaxConfig(StrictModel):
    """How the network settles (Millman's theorem, exact block updates per layer)."""

    sweeps: int = Field(json_schema_extra=flag(), default=5, ge=1, description="T: sweeps over the layers per phase.")
    warm_start: bool = Field(json_schema_extra=flag(),
        default=False,
        description="Start each free phase from the previous state (as a bench does) instead of 0 V. "
        "Default off: each sample then settles the same way whatever came before it.",
    )


class EPConfig(StrictModel):
    """The Equilibrium Propagation learning rule (paper eqs. 7, 9, 10)."""

    beta: float = Field(json_schema_extra=flag(), default=1.0, gt=0, description="Nudge conductance tying each output to its target, S.")
    eta: float = Field(json_schema_extra=flag(), default=1e-2, gt=0, description="Learning rate (S per V^2 of squared-drop change). The paper uses 1e-3 with gamma=500.")
    centered: bool = Field(json_schema_extra=flag(), default=False, description="Centered EP: nudge with +beta and -beta instead of 0 and +beta.")
    eta_layer_ratio: float = Field(json_schema_extra=flag(),
        default=1.0, gt=0,
        description="Each layer of devices, counted from the inputs, learns this many times faster than the one "
        "below it: layer k uses eta * ratio^k. Signals attenuate through resistive layers, so deep networks want "
        "rates rising toward the output (about 3x per layer in Scellier et al. 2023's public implementation).")


class Schedule(StrictModel):
    """A factor that changes over training: 1 until `start`, then `factor` (step) or a geometric ramp from 1 at
    `start` to `factor` at `end` (ramp). Positions are fractions of the run's training steps (0: first, 1: last)."""

    kind: Literal["constant", "step", "ramp"] = Field(default="constant", description="constant (1 throughout), step or ramp.")
    start: float = Field(default=0.5, ge=0, le=1, description="Where the step happens or the ramp begins, fraction of the training steps.")
    end: float = Field(default=1.0, ge=0, le=1, description="ramp: where it reaches factor, fraction of the training steps.")
    factor: float = Field(default=1.0, gt=0, description="The value after the step or at the end of the ramp (times the base value).")

    @model_validator(mode="after")
    def _check(self) -> Schedule:
        if self.kind == "ramp" and self.end <= self.start:
            raise ValueError(f"end: a ramp must end after it starts (start {self.start}, got {self.end})")
        return self

    def at(self, progress: float) -> float:
        """The factor at this fraction of training (0..1)."""
        if self.kind == "constant" or progress < self.start:
            return 1.0
        if self.kind == "step" or progress >= self.end:
            return self.factor
        return self.factor ** ((progress - self.start) / (self.end - self.start))


class AdaptConfig(StrictModel):
    """Adaptive N (`samples: auto`): N follows the online sigma estimate so that sigma/sqrt(N) stays at
    noise.sigma_target (docs/calibration.md, Adaptive N)."""

    every_steps: int = Field(default=20, ge=1, description="K: training steps between updates of N (and drift checks).")
    hysteresis: float = Field(default=0.15, ge=0, lt=1, description="N changes only when sigma/sqrt(N) leaves "
                              "target*(1 +- hysteresis), so that it does not flap with the estimate's scatter.")
    start_samples: int = Field(default=4, ge=1, description="N before the first estimate (the first K steps).")
    n_max: int | None = Field(default=None, ge=1, description="Most readings per node and state (the Allan N_max: "
                              "past it averaging stops paying); unset: from allan_from, else no cap.")
    allan_from: Path | None = Field(json_schema_extra=flag(metavar="CHARACTERIZE.json"), default=None,
                                    description="Cap N at the Allan N_max of this `hil characterize` report.")
    target_from_sweep: Path | None = Field(json_schema_extra=flag(metavar="RUN_DIR"), default=None,
                                           description="Take the sigma target from this `hil sweep sigma` "
                                           "folder (its sigma_opt, as `hil calibrate --from-sweep` chooses it).")
    estimate_fraction: float | None = Field(default=None, gt=0, le=1, description="With N = 1: the fraction of "
                                            "nodes read a second time each step (a rotating subset) to estimate "
                                            "sigma; unset: 0.25 with samples auto, none with a fixed N.")
    drift_alpha: float = Field(default=1e-3, gt=0, lt=1, description="Significance of the F test that restarts "
                               "the running estimate when sigma changed (per check and replica).")
    noisy_ratio: float = Field(default=1.5, gt=1, description="A node is named noisy when its sigma is above this "
                               "many times the median node's (the lower bound of its interval).")


class NoiseConfig(StrictModel):
    """Measurement uncertainty: every read is V + sigma*xi, xi ~ N(0, 1)."""

    sigma: float = Field(json_schema_extra=flag(simulated_only=True), default=0.0, ge=0, description="Standard deviation of one reading of a node voltage, V.")
    samples: int | Literal["auto"] = Field(json_schema_extra=flag(metavar="N|auto"), default=1, description="N: "
                                           "readings averaged per node and state (noise sigma/sqrt(N)); auto: "
                                           "chosen during training for --sigma-target.")
    sigma_target: float | None = Field(json_schema_extra=flag(), default=None, gt=0, description="Effective noise "
                                       "sigma/sqrt(N) to hold, V (samples auto: N follows the online sigma "
                                       "estimate; a fixed N on the simulator: read noise is added up to it). "
                                       "target_schedule anneals it.")
    target_schedule: Schedule = Field(default=Schedule(), description="sigma_target times this factor over "
                                      "training (e.g. annealed: ramp to factor 0.25).")
    sigma_schedule: Schedule = Field(default=Schedule(), json_schema_extra=SIMULATED_ONLY, description="The "
                                     "simulated sigma times this factor over training (a step or a ramp: a "
                                     "drifting bench rehearsed).")
    adapt: AdaptConfig = AdaptConfig()
    nplc: float = Field(json_schema_extra=flag(simulated_only=True), default=1.0, gt=0, description="Integration time per reading, power-line cycles; white noise "
                        "scales as sigma/sqrt(nplc) (sigma is the noise at 1 PLC).")
    line_frequency_hz: float = Field(json_schema_extra=flag("line_frequency", simulated_only=True, choices=LINE_FREQUENCIES_HZ), default=50.0, description="Mains frequency, Hz: 1 PLC = 20 ms at 50 Hz, 16.7 ms at 60 Hz.")
    overhead_s: float = Field(json_schema_extra=flag("overhead", simulated_only=True), default=1e-3, ge=0, description="Time per reading beyond the aperture (trigger, A/D, transfer), s.")
    flicker_floor_V: float = Field(json_schema_extra=flag("flicker", simulated_only=True), default=0.0, ge=0, description="1/f noise: its flat Allan deviation, V (0: none).")
    drift_V_per_s: float = Field(json_schema_extra=flag("drift", simulated_only=True), default=0.0, description="Slow linear drift of every reading, V/s (0: none).")

    @field_validator("line_frequency_hz")
    @classmethod
    def _mains(cls, hz: float) -> float:
        return check_line_frequency(hz)

    @field_validator("samples")
    @classmethod
    def _samples(cls, n: int | str) -> int | str:
        if isinstance(n, int) and n < 1:
            raise ValueError("N must be >= 1, or auto")
        return n

    @model_validator(mode="after")
    def _check(self) -> NoiseConfig:
        if self.samples == "auto" and self.sigma_target is None and self.adapt.target_from_sweep is None:
            raise ValueError("sigma_target: samples auto needs the effective noise to hold (--sigma-target V or "
                             "--target-from-sweep RUN_DIR)")
        if self.adapt.n_max is not None and self.adapt.start_samples > self.adapt.n_max:
            raise ValueError(f"adapt.start_samples: {self.adapt.start_samples} is above adapt.n_max "
                             f"({self.adapt.n_max})")
        return self

    @property
    def adaptive(self) -> bool:
        """N is chosen during training (samples auto)."""
        return self.samples == "auto"

    @property
    def initial_samples(self) -> int:
        """N at the first step: the fixed N, or adapt.start_samples with samples auto."""
        return self.adapt.start_samples if isinstance(self.samples, str) else self.samples


class DevicesConfig(StrictModel):
    """The resistive devices and how an update reaches them (sim_backend/devices)."""

    model: str = Field(json_schema_extra=flag("device_model", metavar="PRESET|DEVICE.yaml"),
        default="ideal",
        description="Resistive device model: a preset (ideal, reram-es, reram-sb, ecram, ecram-mo, capacitor, idealized, "
        "gokmen-vlasov) or the path of a device.yaml (e.g. from `hil characterize --devices`). Its normalized "
        "range maps onto [network.g_min, network.g_max] S.",
    )
    update: Literal["exact", "pulses", "write-verify"] | None = Field(json_schema_extra=flag("update_mode"),
        default=None,
        description="How an update reaches the devices: exact (every change programmed exactly; needs the ideal "
        "model), pulses (open loop: the change becomes a pulse count through the device response) or write-verify "
        "(closed loop to a tolerance); unset: exact for the ideal model, pulses otherwise.",
    )
    rounding: Literal["accumulate", "stochastic"] = Field(
        default="accumulate",
        description="pulses: sub-step changes accumulate per device until they make a pulse (accumulate), or the "
        "pulse count is rounded stochastically, unbiased (stochastic).",
    )
    max_pulses: int = Field(default=64, ge=1, description="pulses: most pulses per device and update (beyond: dropped).")
    tolerance_steps: float = Field(default=1.0, gt=0, description="write-verify: stop within this many nominal steps.")
    verify_max_pulses: int = Field(default=WRITE_VERIFY_MAX_PULSES, ge=1, description="write-verify: most pulses per device and update.")
    verify_max_reversals: int = Field(default=WRITE_VERIFY_MAX_REVERSALS, ge=0, description="write-verify: stop a device after this many "
                                      "overshoots (polarity flips), as the bench's write-verify does.")
    pulse_period_s: float = Field(default=1e-5, gt=0, description="Time per programming pulse, driver overhead "
                                  "included, s (devices are programmed one at a time, as the bench's board does).")
    verify_read_s: float = Field(default=1e-4, gt=0, description="write-verify: time per conductance reading, s.")

    @field_validator("model")
    @classmethod
    def _known(cls, spec: str) -> str:
        resolve_device_model(spec)  # a preset or a readable device.yaml, else one error naming it
        return spec

    @model_validator(mode="after")
    def _check(self) -> DevicesConfig:
        pulsed = self.resolved().pulsed
        if self.update is None:
            self.__dict__["update"] = "pulses" if pulsed else "exact"
        elif self.update == "exact" and pulsed:
            raise ValueError(f"update 'exact' programs changes exactly and ignores the device model {self.model!r}; "
                             "use pulses or write-verify")
        elif self.update != "exact" and not pulsed:
            raise ValueError(f"update {self.update!r} needs a pulsed device model (model is {self.model!r})")
        return self

    def resolved(self) -> DeviceModelConfig:
        """The DeviceModelConfig this section names."""
        return resolve_device_model(self.model)


class DataConfig(StrictModel):
    dataset: Literal["digits", "mnist", "kmnist", "fashion-mnist", "mnist1d"] = Field(json_schema_extra=flag(),
        default="digits", description="digits (8x8, embedded in scikit-learn), mnist, kmnist or fashion-mnist (IDX "
        "files), or mnist1d (40-point signals, generated by the mnist1d package and cached under data_dir)."
    )
    data_dir: Path | None = Field(json_schema_extra=flag(), default=None, description="Folder with the IDX files, flat or torchvision layout (DIR/FashionMNIST/raw); Debian's "
                                      "/usr/share/datasets/fashion-mnist is found by itself.")
    download: bool = Field(json_schema_extra=flag(), default=False, description="Fetch missing files through torchvision, if it imports.")
    classes: list[int] | None = Field(json_schema_extra=flag(), default=None, description="Keep only these labels, e.g. 0,1 (relabelled 0..k-1; unset: all).")
    image_size: int | None = Field(json_schema_extra=flag(), default=None, ge=1, description="Average-pool images down to this side length, pixels (unset: full size).")
    train_limit: int | None = Field(json_schema_extra=flag(), default=None, ge=1, description="Use only the first n training samples (unset: all).")
    test_limit: int | None = Field(json_schema_extra=flag(), default=None, ge=1, description="Use only the first n test samples (unset: all).")

    #: Labels of each dataset: 0..9 for all five.
    LABELS: ClassVar[dict[str, int]] = {"digits": 10, "mnist": 10, "kmnist": 10, "fashion-mnist": 10, "mnist1d": 10}

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        labels = self.LABELS[self.dataset]
        missing = sorted({c for c in self.classes or [] if not 0 <= c < labels})
        if missing:
            raise ValueError(f"classes: {self.dataset} has no label {', '.join(map(str, missing))} "
                             f"(its labels are 0..{labels - 1})")
        if self.classes is not None and len(set(self.classes)) < 2:
            raise ValueError(f"classes: need at least 2 distinct labels (got {self.classes})")
        return self


class TrainConfig(StrictModel):
    epochs: int = Field(json_schema_extra=flag(), default=10, ge=1, description="Passes over the training set.")
    batch_size: int = Field(json_schema_extra=flag(), default=4, ge=1, description="Samples per conductance update.")
    eval_batch_size: int = Field(default=256, ge=1, description="Samples per evaluation pass (simulator only).")
    seed: int = Field(json_schema_extra=flag(), default=0, ge=0, description="Seed for the initial conductances, data order and noise.")
    replicas: int = Field(json_schema_extra=flag(simulated_only=True), default=1, ge=1, description="R independent networks trained at once, seeds seed..seed+R-1.")
    checkpoint_every_steps: int = Field(json_schema_extra=flag(metavar="K"), default=100, ge=0, description="Snapshot checkpoint (conductances, data "
                                        "order, RNG states) every K training steps; 0: only at epoch ends.")
    checkpoint_every_s: float = Field(json_schema_extra=flag(metavar="S"), default=600.0, ge=0, description="Snapshot checkpoint every S seconds of "
                                      "training, s; 0: no time-based snapshots.")


DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64}


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype a config's `dtype` names (float32 or float64): the one place that maps them."""
    try:
        return DTYPES[name]
    except KeyError:
        raise ConfigError(f"dtype: float32 or float64 (got {name!r})") from None


class RunConfig(StrictModel):
    """Everything that defines one training run. Load with `load_config`."""

    name: str = Field(json_schema_extra=flag(), default="run", pattern=r"^[A-Za-z0-9_.-]+$", description="Run name, used in the run folder name.")
    network: NetworkConfig = NetworkConfig()
    relax: RelaxConfig = RelaxConfig()
    ep: EPConfig = EPConfig()
    noise: NoiseConfig = NoiseConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    devices: DevicesConfig = Field(default=DevicesConfig(), json_schema_extra=SIMULATED_ONLY)  # a bench has its own
    device: str = Field(json_schema_extra=flag(), default="cpu", pattern=r"^(cpu|cuda(:\d+)?|auto)$", description="Torch compute device of the simulator: cpu, cuda, cuda:N or auto (not the "
                        "resistive devices: those are devices.model).")
    dtype: Literal["float32", "float64"] = Field(json_schema_extra=flag(), default="float32", description="Floating point precision of the simulator.")
    runs_dir: Path = Field(json_schema_extra=flag(), default=Path("runs"), description="Folder the run folders are created in.")
    #: dotted keys that build_config sized to the data (not set by the user): a lab's settings may replace them
    _sized_to_data: frozenset[str] = PrivateAttr(default=frozenset())

    @property
    def torch_dtype(self) -> torch.dtype:
        """The simulator's and the readings' floating point type (`dtype` as a torch dtype)."""
        return torch_dtype(self.dtype)

    @model_validator(mode="after")
    def _check(self) -> RunConfig:
        if self.devices.update != "exact" and self.network.g_max is None:
            m = self.devices.resolved()
            raise ValueError(f"network.g_max: the device model {self.devices.model!r} maps its normalized range "
                             f"[{m.w_min:g}, {m.w_max:g}] onto [g_min, g_max] S, so it needs g_max; set --g-max, or "
                             f"leave it unset for {DEVICE_RANGE_FACTOR:g} x the largest initial conductance")
        return self


@dataclass(frozen=True)
class FlagField:
    """A config field that is a `hil` run option (marked with `flag(...)`): the one source of its flag and help."""

    dest: str  # argparse dest: the flag without dashes, e.g. "gamma"
    dotted: str  # the config field, e.g. "network.input_gain"
    info: FieldInfo
    metavar: str | None
    simulated_only: bool

    @property
    def option(self) -> str:
        return "--" + self.dest.replace("_", "-")

    @property
    def help(self) -> str:
        """The description's first sentence (the rest, the why, is for the config reference and the code)."""
        text = " ".join((self.info.description or "").split())
        first = re.match(r"(.+?\.)(?=\s+[A-Z]|$)", text)
        sentence = (first.group(1) if first else text).removesuffix(".")
        # lower case like argparse's own help, but not a symbol or an acronym (N:, R networks, EP)
        sentence = sentence[0].lower() + sentence[1:] if re.match(r"[A-Z][a-z]+\b", sentence) else sentence
        return sentence + (" (simulator only: refused with --lab)" if self.simulated_only else "")

    @property
    def choices(self) -> tuple[Any, ...] | None:
        """A Literal's values (also inside `Literal[...] | None`), or the marker's choices."""
        extra = self.info.json_schema_extra if isinstance(self.info.json_schema_extra, dict) else {}
        listed = extra.get("choices")
        if isinstance(listed, list):
            return tuple(listed)
        ann = self.info.annotation
        for part in (ann, *get_args(ann)):
            if getattr(part, "__origin__", None) is Literal:
                return get_args(part)
        return None


def _walk(model: type[BaseModel], prefix: str = "", inherited: bool = False) -> Iterator[tuple[str, FieldInfo, bool]]:
    """(dotted name, field, simulated_only) of every leaf field; a section's simulated_only marker covers its fields."""
    for name, info in model.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        simulated = inherited or bool(extra.get("simulated_only"))
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from _walk(ann, f"{prefix}{name}.", simulated)
        else:
            yield f"{prefix}{name}", info, simulated


def flag_fields() -> list[FlagField]:
    """The run options, in config order: every field marked with `flag(...)`."""
    found = []
    for dotted, info, simulated in _walk(RunConfig):
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        name = extra.get("flag")
        if name:
            dest = name if isinstance(name, str) else dotted.rsplit(".", 1)[-1]
            metavar = extra.get("metavar")
            found.append(FlagField(dest, dotted, info, metavar if isinstance(metavar, str) else None, simulated))
    return found


#: run option (argparse dest) -> dotted config field, derived from the fields' markers.
FLAG_FIELDS: dict[str, str] = {f.dest: f.dotted for f in flag_fields()}

#: The fields a bench cannot honour (it has its own noise and devices and runs one network), from the markers.
SIMULATED_ONLY_FIELDS: tuple[str, ...] = tuple(dotted for dotted, _, simulated in _walk(RunConfig) if simulated)


def simulated_only_settings(cfg: RunConfig) -> list[str]:
    """The simulator-only settings this config sets to other than their defaults (set and different: a run's saved
    config.yaml spells out every default, and a device model's own update mode is not the user's)."""
    default = RunConfig()
    given = []
    for dotted in SIMULATED_ONLY_FIELDS:
        section, _, leaf = dotted.rpartition(".")
        mine, base = cfg, default
        for part in section.split(".") if section else ():  # a nested section (noise.sigma_schedule)
            mine, base = getattr(mine, part), getattr(base, part)
        if leaf in mine.model_fields_set and getattr(mine, leaf) != getattr(base, leaf):
            given.append(dotted)
    return given


def refuse_on_bench(cfg: RunConfig) -> None:
    """Raise ConfigError naming every simulator-only setting the config gives: on a bench it would be ignored."""
    simulated = simulated_only_settings(cfg)
    if simulated:
        options = {f.dotted: f.option for f in flag_fields()}
        flags = ", ".join(options[d] for d in simulated if d in options)
        what = "describes" if len(simulated) == 1 else "describe"
        them = "it" if len(simulated) == 1 else "them"
        raise ConfigError(f"--lab: {', '.join(simulated)} {what} the simulated noise, devices or replicas; a bench "
                          f"has its own and runs one network: drop {them + ' (' + flags + ')' if flags else them} (the "
                          "bench's timing is its lab config's timing: section; hil characterize --lab measures its "
                          "noise, and with --devices its devices)")


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    parts = dotted.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: cannot set inside a non-table value")
    node[parts[-1]] = value


# Defaults sized to the data, filled in where nothing set them (see `data_defaults`). Two settings are known to
# train: the 8x8 digits (64 inputs: gamma 64 V, eta 1e-2) and the paper's 28x28 images (784 inputs: gamma 500 V,
# eta 1e-3); gamma and eta follow power laws in the number of inputs through both. Deeper networks attenuate the
# signal at every resistive layer: like Scellier et al. 2023's public implementation (1 hidden layer: gain 480,
# 2: 2000, 3: 4000) they get a larger gain per extra hidden layer and bipolar diodes. (Its rates rising 3x per
# layer toward the output, ep.eta_layer_ratio = 3, trained worse here: 36.8% against 52.5% after 20,000
# Fashion-MNIST samples, 784-256-128-10.)
GAIN_ANCHORS = ((64, 64.0), (784, 500.0))
ETA_ANCHORS = ((64, 1e-2), (784, 1e-3))
DEEP_GAIN_FACTOR = 4.0  # per hidden layer beyond the first
IMAGE_SIDE = {"digits": 8, "mnist": 28, "kmnist": 28, "fashion-mnist": 28}
SIGNAL_LENGTH = {"mnist1d": 40}  # datasets of 1-D signals: inputs per sample
# A pulsed device model maps its normalized range onto [g_min, g_max] S, so it needs a top. Unset, g_max is this
# many times the largest initial conductance c/sqrt(fan_in) of any layer: the start lies in the lower part of the
# range, with room for training to raise conductances. (The Fashion-MNIST device benchmarks used 0.05 S, 2.3 times
# the 0.022 S of their 1024-node hidden layer; with this factor the default there is 0.055 S.)
DEVICE_RANGE_FACTOR = 2.5


def _power_law(anchors, n: float) -> float:
    (n0, v0), (n1, v1) = anchors
    return v0 * (n / n0) ** (math.log(v1 / v0) / math.log(n1 / n0))


def device_range_top(layer_sizes: list[int], init_scale: float) -> float:
    """The default g_max of a pulsed device model, S: DEVICE_RANGE_FACTOR x the largest initial conductance
    c/sqrt(fan_in) over the layers of devices (fan_in: the nodes below, the doubled inputs for the first layer)."""
    fan_in = min(node_sizes(layer_sizes)[:-1])
    return float(f"{DEVICE_RANGE_FACTOR * init_scale / math.sqrt(fan_in):.2g}")


def _pulsed(spec: Any) -> bool:
    """Whether a devices.model value names a pulsed model (False for one that does not resolve: validation says so)."""
    try:
        return resolve_device_model(str(spec)).pulsed
    except (ConfigError, OSError):
        return False


def data_defaults(tree: dict[str, Any]) -> dict[str, Any]:
    """The settings that depend on the input count and depth, for a config tree that leaves them unset.

    Returns dotted keys -> values; only keys absent from the tree. Invalid trees return {} (validation reports).
    """
    try:
        data, net, ep = tree.get("data", {}), tree.get("network", {}), tree.get("ep", {})
        name = data.get("dataset", "digits")
        inputs = SIGNAL_LENGTH[name] if name in SIGNAL_LENGTH else int(data.get("image_size") or IMAGE_SIDE[name]) ** 2
        hidden = list(net.get("hidden", NetworkConfig.model_fields["hidden"].default))
        depth = len(hidden)
        deep = depth >= 2 and all(int(h) >= 2 for h in hidden)  # bipolar needs two nodes a layer
        found: dict[str, Any] = {
            "network.input_gain": round(_power_law(GAIN_ANCHORS, inputs) * DEEP_GAIN_FACTOR ** max(depth - 1, 0), 1),
            "ep.eta": float(f"{_power_law(ETA_ANCHORS, inputs):.2g}"),
            "network.bipolar": deep,
        }
        if _pulsed(tree.get("devices", {}).get("model", "ideal")):
            init_scale = float(net.get("init_scale", NetworkConfig.model_fields["init_scale"].default))
            found["network.g_max"] = device_range_top([inputs, *map(int, hidden), 1], init_scale)
    except (AttributeError, KeyError, TypeError, ValueError, ZeroDivisionError):
        return {}
    given = {"network.input_gain": "input_gain" in net, "ep.eta": "eta" in ep, "network.bipolar": "bipolar" in net,
             "network.g_max": "g_max" in net}
    return {k: v for k, v in found.items() if not given[k]}


def build_config(base: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Validate a config tree with dotted-key overrides applied; raise ConfigError naming the field.

    Settings left unset that depend on the data (input gain, eta, diodes) are sized to it
    (`data_defaults`); the resolved values are in the returned config, and so in every run's config.yaml.
    """
    tree = merge_trees({}, base or {})
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(tree, dotted, value)
    auto = data_defaults(tree)
    for dotted, value in auto.items():
        _set_dotted(tree, dotted, value)
    try:
        cfg = RunConfig.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None
    cfg._sized_to_data = frozenset(auto)
    return cfg


def merge_trees(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge extra into a copy of base (tables merge, other values replace)."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge_trees(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(paths: Path | list[Path] | None = None, overrides: dict[str, Any] | None = None,
                base: dict[str, Any] | None = None) -> RunConfig:
    """Load a RunConfig from YAML files (later files win) over `base`, with dotted-key overrides on top."""
    if paths is None:
        paths = []
    elif not isinstance(paths, (list, tuple)):
        paths = [paths]
    tree: dict[str, Any] = merge_trees({}, base or {})
    for p in paths:
        tree = merge_trees(tree, read_yaml(p))
    return build_config(tree, overrides)


def config_to_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
