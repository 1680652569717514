"""Typed run configuration (pydantic 2).

Every field documents its meaning and unit. Unknown keys are rejected so a
typo in a YAML file is an error, not a silently ignored setting.

Units: voltages in volts (V), conductances in siemens (S) of the simulated
network (the trainer works in these normalized units; a lab config maps them
to the bench's microsiemens and volts), currents in amperes (A).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

DATASETS = ("digits", "mnist", "kmnist", "fashion-mnist", "mnist1d")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class NetworkConfig(_Strict):
    """The layered resistive network (Kendall et al. 2020; Scellier et al. 2023)."""

    hidden: list[int] = Field(
        default=[128],
        description="Hidden layer sizes (nodes). The input size comes from the dataset "
        "(doubled to [x, -x] in the crossbar) and the output size from its classes.",
    )
    input_gain: float = Field(
        default=64.0, gt=0,
        description="gamma: input voltage per unit of input, V. Inputs are clamped at "
        "gamma*[x, -x]. Hidden voltages scale as gamma*sqrt(sum x^2)/fan_in; 64 suits "
        "the 8x8 digits, the paper uses 500 for 28x28 images.",
    )
    bias: bool = Field(default=False, description="Add a trainable current source (A) at every hidden and output node.")
    bipolar: bool = Field(
        default=False,
        description="Half of each hidden layer gets reversed diodes (V <= 0) instead of ReLU (V >= 0).",
    )
    init_scale: float = Field(
        default=0.7, gt=0,
        description="c: initial conductances are uniform on [0, c/sqrt(fan_in)] S. Node voltages "
        "do not depend on c (Millman's ratio is scale-free); c sets how strong the nudge beta is "
        "against the ~c*sqrt(fan_in)/2 S already at each output node, and how large a relative "
        "step eta makes. 0.7 lets the paper's setting pass 80% after one Fashion-MNIST epoch.",
    )
    g_min: float = Field(
        default=1e-3, ge=0,
        description="Lowest device conductance, S; updates saturate here. Real devices never reach 0 (RRAM spans "
        "about 1-100 uS); above 0 it keeps every node's total conductance positive, so no node floats (0/0, a "
        "non-finite update) when training drives all its devices down. 1e-3 S is 1/18 to 1/62 of the initial "
        "scale c/sqrt(fan_in) of the input layer (28x28 images to the 8x8 digits).")
    g_max: float | None = Field(default=None, description="Highest device conductance, S (None: unbounded).")

    @model_validator(mode="after")
    def _check(self) -> NetworkConfig:
        if any(h < 1 for h in self.hidden):
            raise ValueError(f"hidden: every layer needs at least 1 node (got {self.hidden})")
        if self.bipolar and any(h < 2 for h in self.hidden):
            raise ValueError("bipolar: needs at least 2 nodes per hidden layer")
        if self.g_max is not None and self.g_max <= self.g_min:
            raise ValueError(f"g_max: must exceed g_min={self.g_min} (got {self.g_max})")
        return self


class RelaxConfig(_Strict):
    """How the network settles (Millman's theorem, exact block updates per layer)."""

    sweeps: int = Field(default=5, ge=1, description="T: sweeps over the layers per phase.")
    warm_start: bool = Field(
        default=False,
        description="Start each free phase from the previous state (as a bench does) instead of 0 V. "
        "Default off: each sample then settles the same way whatever came before it.",
    )


class EPConfig(_Strict):
    """The Equilibrium Propagation learning rule (paper eqs. 7, 9, 10)."""

    beta: float = Field(default=1.0, gt=0, description="Nudge conductance tying each output to its target, S.")
    eta: float = Field(default=1e-2, gt=0, description="Learning rate (S per V^2 of squared-drop change). The paper uses 1e-3 with gamma=500.")
    centered: bool = Field(default=False, description="Centered EP: nudge with +beta and -beta instead of 0 and +beta.")
    eta_layer_ratio: float = Field(
        default=1.0, gt=0,
        description="Each layer of devices, counted from the inputs, learns this many times faster than the one "
        "below it: layer k uses eta * ratio^k. Signals attenuate through resistive layers, so deep networks want "
        "rates rising toward the output (about 3x per layer in Scellier et al. 2023's public implementation).")


class NoiseConfig(_Strict):
    """Measurement uncertainty: every read is V + sigma*xi, xi ~ N(0, 1)."""

    sigma: float = Field(default=0.0, ge=0, description="Standard deviation of one reading of a node voltage, V.")
    samples: int = Field(default=1, ge=1, description="N: readings averaged per node and state (noise sigma/sqrt(N)).")
    nplc: float = Field(default=1.0, gt=0, description="Integration time per reading, power-line cycles; white noise "
                        "scales as sigma/sqrt(nplc) (sigma is the noise at 1 PLC).")
    line_frequency_hz: Literal[50.0, 60.0] = Field(default=50.0, description="Mains frequency: 1 PLC = 20 ms at 50 Hz, 16.7 ms at 60 Hz.")
    overhead_s: float = Field(default=1e-3, ge=0, description="Time per reading beyond the aperture (trigger, A/D, transfer), s.")
    flicker_floor_V: float = Field(default=0.0, ge=0, description="1/f noise: its flat Allan deviation, V (0: none).")
    drift_V_per_s: float = Field(default=0.0, description="Slow linear drift of every reading, V/s (0: none).")


class DevicesConfig(_Strict):
    """The resistive devices and how an update reaches them (sim_backend/devices)."""

    model: str = Field(
        default="ideal",
        description="Device model: a preset (ideal, reram-es, reram-sb, ecram, ecram-mo, capacitor, idealized, "
        "gokmen-vlasov) or the path of a device.yaml (e.g. from `hil characterize --devices`). Its normalized "
        "range maps onto [network.g_min, network.g_max] S.",
    )
    update: Literal["exact", "pulses", "write-verify"] | None = Field(
        default=None,
        description="exact: every change programmed exactly (needs the ideal model); pulses: open loop, the change "
        "becomes a pulse count through the device response; write-verify: closed loop to a tolerance. "
        "Default: exact for the ideal model, pulses otherwise.",
    )
    rounding: Literal["accumulate", "stochastic"] = Field(
        default="accumulate",
        description="pulses: sub-step changes accumulate per device until they make a pulse (accumulate), or the "
        "pulse count is rounded stochastically, unbiased (stochastic).",
    )
    max_pulses: int = Field(default=64, ge=1, description="pulses: most pulses per device and update (beyond: dropped).")
    tolerance_steps: float = Field(default=1.0, gt=0, description="write-verify: stop within this many nominal steps.")
    verify_max_pulses: int = Field(default=30, ge=1, description="write-verify: most pulses per device and update.")
    verify_max_reversals: int = Field(default=3, ge=0, description="write-verify: stop a device after this many "
                                      "overshoots (polarity flips), as the bench's write-verify does.")
    pulse_period_s: float = Field(default=1e-5, gt=0, description="Time per programming pulse, driver overhead "
                                  "included, s (devices are programmed one at a time, as the bench's board does).")
    verify_read_s: float = Field(default=1e-4, gt=0, description="write-verify: time per conductance reading, s.")

    @field_validator("model")
    @classmethod
    def _known(cls, spec: str) -> str:
        from hil.core.devices.store import resolve_device_model

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

    def resolved(self):
        """The DeviceModelConfig this section names."""
        from hil.core.devices.store import resolve_device_model

        return resolve_device_model(self.model)


class DataConfig(_Strict):
    dataset: Literal["digits", "mnist", "kmnist", "fashion-mnist", "mnist1d"] = Field(
        default="digits", description="digits (8x8, embedded in scikit-learn), mnist, kmnist or fashion-mnist (IDX "
        "files), or mnist1d (40-point signals, generated by the mnist1d package and cached under data_dir)."
    )
    data_dir: Path | None = Field(default=None, description="Folder with the IDX files (flat or torchvision layout).")
    download: bool = Field(default=False, description="Fetch missing files through torchvision, if it imports.")
    classes: list[int] | None = Field(default=None, description="Keep only these labels (relabelled 0..k-1).")
    image_size: int | None = Field(default=None, ge=1, description="Average-pool images down to this side length, pixels.")
    train_limit: int | None = Field(default=None, ge=1, description="Use only the first n training samples.")
    test_limit: int | None = Field(default=None, ge=1, description="Use only the first n test samples.")

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if self.classes is not None and len(set(self.classes)) < 2:
            raise ValueError(f"classes: need at least 2 distinct labels (got {self.classes})")
        return self


class TrainConfig(_Strict):
    epochs: int = Field(default=10, ge=1, description="Passes over the training set.")
    batch_size: int = Field(default=4, ge=1, description="Samples per conductance update.")
    eval_batch_size: int = Field(default=256, ge=1, description="Samples per evaluation pass (simulator only).")
    seed: int = Field(default=0, ge=0, description="Seed for the initial conductances, data order and noise.")
    replicas: int = Field(default=1, ge=1, description="R independent networks trained at once (simulator).")
    checkpoint_every_steps: int = Field(default=100, ge=0, description="Snapshot checkpoint (conductances, data "
                                        "order, RNG states) every K training steps; 0: only at epoch ends.")
    checkpoint_every_s: float = Field(default=600.0, ge=0, description="Snapshot checkpoint every S seconds of "
                                      "training, s; 0: no time-based snapshots.")


class RunConfig(_Strict):
    """Everything that defines one training run. Load with `load_config`."""

    name: str = Field(default="run", pattern=r"^[A-Za-z0-9_.-]+$", description="Run name, used in the run folder name.")
    network: NetworkConfig = NetworkConfig()
    relax: RelaxConfig = RelaxConfig()
    ep: EPConfig = EPConfig()
    noise: NoiseConfig = NoiseConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    devices: DevicesConfig = DevicesConfig()
    device: str = Field(default="cpu", pattern=r"^(cpu|cuda(:\d+)?|auto)$", description="cpu, cuda, cuda:N or auto.")
    dtype: Literal["float32", "float64"] = Field(default="float32", description="Floating point precision of the simulator.")
    runs_dir: Path = Field(default=Path("runs"), description="Where run folders are created.")
    #: dotted keys that build_config sized to the data (not set by the user): a lab's settings may replace them
    _sized_to_data: frozenset[str] = PrivateAttr(default=frozenset())

    @model_validator(mode="after")
    def _check(self) -> RunConfig:
        if self.devices.update != "exact" and self.network.g_max is None:
            raise ValueError(f"network.g_max: the device model {self.devices.model!r} needs the device range "
                             "[g_min, g_max] its normalized range maps onto; set --g-max")
        return self


# CLI flag -> dotted config field. One place, so README, CLI and tests agree.
FLAG_FIELDS: dict[str, str] = {
    "name": "name",
    "dataset": "data.dataset",
    "data_dir": "data.data_dir",
    "download": "data.download",
    "classes": "data.classes",
    "image_size": "data.image_size",
    "train_limit": "data.train_limit",
    "test_limit": "data.test_limit",
    "hidden": "network.hidden",
    "gamma": "network.input_gain",
    "bias": "network.bias",
    "bipolar": "network.bipolar",
    "init_scale": "network.init_scale",
    "g_min": "network.g_min",
    "g_max": "network.g_max",
    "sweeps": "relax.sweeps",
    "warm_start": "relax.warm_start",
    "beta": "ep.beta",
    "eta": "ep.eta",
    "eta_layer_ratio": "ep.eta_layer_ratio",
    "centered": "ep.centered",
    "sigma": "noise.sigma",
    "samples": "noise.samples",
    "nplc": "noise.nplc",
    "line_frequency": "noise.line_frequency_hz",
    "overhead": "noise.overhead_s",
    "flicker": "noise.flicker_floor_V",
    "drift": "noise.drift_V_per_s",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "seed": "train.seed",
    "replicas": "train.replicas",
    "device_model": "devices.model",
    "update_mode": "devices.update",
    "checkpoint_every_steps": "train.checkpoint_every_steps",
    "checkpoint_every_s": "train.checkpoint_every_s",
    "device": "device",
    "dtype": "dtype",
    "runs_dir": "runs_dir",
}


def format_validation_error(err: ValidationError) -> str:
    """One line naming the first offending field, its problem and the value given."""
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "config"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        return f"{loc}: unknown key"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    value = first.get("input")
    shown = "" if isinstance(value, dict) else f" (got {value!r})"
    return f"{loc}: {msg}{shown}"


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


def _power_law(anchors, n: float) -> float:
    (n0, v0), (n1, v1) = anchors
    return v0 * (n / n0) ** (math.log(v1 / v0) / math.log(n1 / n0))


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
    except (AttributeError, KeyError, TypeError, ValueError):
        return {}
    found = {
        "network.input_gain": round(_power_law(GAIN_ANCHORS, inputs) * DEEP_GAIN_FACTOR ** max(depth - 1, 0), 1),
        "ep.eta": float(f"{_power_law(ETA_ANCHORS, inputs):.2g}"),
        "network.bipolar": deep,
    }
    given = {"network.input_gain": "input_gain" in net, "ep.eta": "eta" in ep, "network.bipolar": "bipolar" in net}
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


def read_yaml(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: not valid YAML: {err.problem or err.context}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err.__class__.__name__}: {str(err).splitlines()[0]})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read ({getattr(err, 'strerror', None) or err.__class__.__name__})") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
    return tree


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
