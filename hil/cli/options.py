"""The command line's parsing: the one-line-error parser, the run options (one flag per config field), and
the command line's settings as config overrides."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from hil.core.config import FLAG_FIELDS, FlagField, flag_fields
from hil.presets import load_preset, preset_names


class UsageError(ValueError):
    """Bad command-line input; printed as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors and negative numbers in any float form (-1e-5) taken as values."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")

    def error(self, message: str) -> Any:  # NoReturn in argparse; exit() raises
        self.exit(2, f"hil: error: {message} (see '{self.prog} --help')\n")


def int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    return values


def _layer_list(text: str) -> list[int]:
    """Hidden layer sizes; `none` (not an empty string, which is usually a shell mistake) for no hidden layer."""
    return [] if text.strip().lower() == "none" else int_list(text)


def _set_pair(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. noise.sigma=1e-5), got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"{key.strip()}: the value {value!r} is not readable YAML") from None


def _samples_arg(text: str) -> int | str:
    """N (a whole number; the config says which are allowed) or auto."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number N or auto, got {text!r}") from None


#: Flags whose text needs more than int(): list[int] fields read comma-separated lists.
_LIST_PARSERS: dict[str, Callable[[str], list[int]]] = {"hidden": _layer_list}
#: Flags of a union type argparse cannot read from the annotation alone.
_UNION_PARSERS: dict[str, Callable[[str], Any]] = {"samples": _samples_arg}


def _flag_kwargs(field: FlagField) -> dict[str, Any]:
    """argparse settings for a config field, from its type: bool -> --x/--no-x, Literal -> choices, lists of ints
    comma-separated; help from its description. Every value defaults to None: unset flags leave the config alone."""
    kwargs: dict[str, Any] = {"dest": field.dest, "default": None, "help": field.help.replace("%", "%%")}
    if field.metavar:
        kwargs["metavar"] = field.metavar
    ann = field.info.annotation
    types = [t for t in (ann, *getattr(ann, "__args__", ())) if t is not type(None)]
    choices = field.choices
    if field.dest in _UNION_PARSERS:
        kwargs["type"] = _UNION_PARSERS[field.dest]
    elif bool in types:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif choices is not None:
        kwargs.update(choices=choices, type=type(choices[0]))
    elif any(getattr(t, "__origin__", None) is list for t in types):
        kwargs["type"] = _LIST_PARSERS.get(field.dest, int_list)
    else:
        kwargs["type"] = next(t for t in (int, float, Path, str) if t in types)
    return kwargs


def add_run_options(p: argparse.ArgumentParser, exclude: frozenset[str] = frozenset()) -> None:
    """The RunConfig flags, shared by train and the sweeps: one per config field marked with `flag(...)` in
    hil.core.config, which holds its name, type and help (docs/flags.md's table is generated from them too)."""
    g = _Group(p.add_argument_group("run options (override the config file)"), exclude)
    g.add_argument("--config", type=Path, action="append", metavar="FILE",
                   help="YAML file with a RunConfig (nested as the config fields; unknown keys are errors); repeat to "
                   "merge (later wins)")
    add_preset_options(g)
    for field in flag_fields():
        g.add_argument(field.option, **_flag_kwargs(field))
    g.add_argument("--set", dest="set_pairs", type=_set_pair, action="append", default=[], metavar="KEY=VALUE",
                   help="set any config field, e.g. --set noise.sigma=2e-5")


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return n


def add_preset_options(g) -> None:
    """--preset (a named config beneath --config files and flags) and --threads (this process's CPU threads)."""
    g.add_argument("--preset", metavar="NAME", help=f"start from a named config ({', '.join(preset_names())}); "
                   "--config files and flags override it")
    g.add_argument("--threads", type=_positive_int, metavar="N", help="CPU threads for torch (default: the cores "
                   "shared fairly among the hil processes running here; OMP_NUM_THREADS also sets it); with "
                   "`sweep --executor ray`: the threads and CPUs of each chunk's task (default 1)")


def preset_tree(args: argparse.Namespace) -> dict[str, Any]:
    """The --preset's config tree ({} without one)."""
    name = getattr(args, "preset", None)
    return load_preset(name) if name else {}


#: Commands that compute (and so take a share of the cores, hil.threads); the others mostly wait.
COMPUTE_COMMANDS = frozenset({"train", "sweep", "characterize"})


class _Group:
    """An argument group that skips the flags a command defines its own way (e.g. --sigma in sweeps)."""

    def __init__(self, group: argparse._ArgumentGroup, exclude: frozenset[str]) -> None:
        self.group, self.exclude = group, exclude

    def add_argument(self, flag: str, *args: Any, **kwargs: Any) -> None:
        if flag.lstrip("-").replace("-", "_") not in self.exclude:
            if "action" not in kwargs:
                kwargs["action"] = StoreOnce
            elif kwargs["action"] is argparse.BooleanOptionalAction:
                kwargs["action"] = _BoolOnce
            self.group.add_argument(flag, *args, **kwargs)


def _refuse_repeat(action: argparse.Action, parser, namespace, option_string) -> None:
    """A setting given twice is an error: silently keeping the last value hides a typo in a long command."""
    seen = namespace.__dict__.setdefault("_given_once", {})
    if action.dest in seen:
        both = "" if seen[action.dest] == option_string else f" (as {seen[action.dest]} and {option_string})"
        parser.error(f"argument {option_string}: given twice{both}; give each setting once")
    seen[action.dest] = option_string


class StoreOnce(argparse._StoreAction):
    def __call__(self, parser, namespace, values, option_string=None):
        _refuse_repeat(self, parser, namespace, option_string)
        super().__call__(parser, namespace, values, option_string)


class _BoolOnce(argparse.BooleanOptionalAction):
    def __call__(self, parser, namespace, values, option_string=None):
        _refuse_repeat(self, parser, namespace, option_string)
        super().__call__(parser, namespace, values, option_string)


#: Flags that only change how a network learns: `hil characterize` holds one state and reads it, so it has none of them.
TRAINING_ONLY = frozenset({"train_limit", "warm_start", "beta", "eta", "eta_layer_ratio", "centered", "samples",
                           "sigma_target", "allan_from", "target_from_sweep",
                           "update_mode", "epochs", "batch_size", "replicas", "checkpoint_every_steps",
                           "checkpoint_every_s"})


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given on the command line, flags and --set pairs, as dotted keys. A key given twice (two
    --set, or --set and its flag) is an error, as a repeated flag is: which one wins would be a guess."""
    over, given = {}, {}
    for flag, dotted in FLAG_FIELDS.items():
        value = getattr(args, flag, None)
        if value is not None:
            over[dotted] = str(value) if isinstance(value, Path) else value
            given[dotted] = "--" + flag.replace("_", "-")
    for key, value in args.set_pairs:
        if key in given:
            also = "given twice" if given[key].startswith("--set") else f"also given as {given[key]}"
            raise UsageError(f"--set {key}: {also}; give each setting once")
        over[key] = value
        given[key] = f"--set {key}"
    return over


