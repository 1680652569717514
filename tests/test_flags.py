"""One source for the run options: the flags, their help and the flag table (docs/flags.md) all come from the config fields
(hil.core.config `flag(...)` markers); a bench refuses the settings that describe the simulator, naming each."""

import argparse
import re
from pathlib import Path

import pytest

from hil.cli import add_run_options, build_parser, flag_table, main, subcommand
from hil.core.config import FLAG_FIELDS, RunConfig, build_config, flag_fields, simulated_only_settings

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_LAB = ROOT / "examples" / "lab-emulated.yaml"


def readme_table() -> str:
    text = (ROOT / "docs" / "flags.md").read_text()
    found = re.search(r"<!-- flags: .*? -->\n(.*?)<!-- /flags -->", text, re.S)
    assert found, "docs/flags.md lost its <!-- flags: ... --> table"
    return found.group(1)


def table_rows(table: str) -> dict[str, str]:
    """flag -> meaning, from a markdown table whose cells escape | as \\|."""
    rows = {}
    for line in table.strip().splitlines()[2:]:
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        flag = cells[0].split("`")[1].split(" ")[0]
        rows[flag] = cells[3]
    return rows


def test_readme_flag_table_is_the_generated_one():
    assert readme_table() == flag_table(), ("docs/flags.md's flag table differs from the flags; replace it with the output of "
                                            'python -c "from hil.cli import flag_table; print(flag_table())"')


def test_readme_names_every_train_flag_with_its_help():
    rows = table_rows(readme_table())
    train = subcommand(build_parser(), "train")
    actions = {a.option_strings[0]: a for a in train._actions
               if a.option_strings and not isinstance(a, argparse._HelpAction)}
    assert set(rows) == set(actions)
    for flag, action in actions.items():
        assert rows[flag] == (action.help or "").replace("%%", "%"), flag


def test_every_marked_field_has_a_flag_and_every_run_option_a_field():
    parser = argparse.ArgumentParser()
    add_run_options(parser)
    # --config, --preset, --threads and --set are the options that are not a config field
    options = {a.dest: a for a in parser._actions if a.option_strings and a.dest not in ("help", "config", "preset", "threads", "set_pairs")}
    assert set(options) == set(FLAG_FIELDS)
    for field in flag_fields():
        action = options[field.dest]
        assert field.option in action.option_strings
        assert action.help and field.help and action.help.replace("%%", "%") == field.help
    # the flags README and older scripts use keep their names
    for name in ("--gamma", "--beta", "--eta", "--samples", "--sigma", "--nplc", "--line-frequency", "--overhead",
                 "--flicker", "--drift", "--replicas", "--device-model", "--update-mode", "--hidden", "--classes",
                 "--checkpoint-every-steps", "--checkpoint-every-s", "--runs-dir", "--data-dir", "--no-warm-start"):
        assert name in {o for a in parser._actions for o in a.option_strings}, name


def test_every_config_field_says_what_it_is():
    def leaves(model, prefix=""):
        for name, info in model.model_fields.items():
            sub = info.annotation
            if isinstance(sub, type) and hasattr(sub, "model_fields"):
                yield from leaves(sub, f"{prefix}{name}.")
            else:
                yield f"{prefix}{name}", info
    for dotted, info in leaves(RunConfig):
        assert info.description and len(info.description) > 10, dotted


def test_flags_convert_by_the_field_type():
    args = subcommand(build_parser(), "train").parse_args(
        ["--hidden", "none", "--classes", "0,1", "--no-bias", "--line-frequency", "60", "--dataset", "kmnist",
         "--update-mode", "write-verify", "--runs-dir", "r", "--gamma", "-3", "--set", "noise.sigma=2.0e-5"])
    assert args.hidden == [] and args.classes == [0, 1] and args.bias is False and args.line_frequency == 60.0
    assert args.dataset == "kmnist" and args.update_mode == "write-verify" and args.runs_dir == Path("r")
    assert args.gamma == -3.0 and args.set_pairs == [("noise.sigma", 2.0e-5)] and args.sigma is None


@pytest.mark.parametrize("args,said", [
    (["--set", "ep.beta=1", "--beta", "2"], "--set ep.beta: also given as --beta"),
    (["--gamma", "1", "--set", "network.input_gain=2"], "--set network.input_gain: also given as --gamma"),
    (["--set", "ep.beta=1", "--set", "ep.beta=2"], "--set ep.beta: given twice"),
])
def test_a_setting_given_by_set_and_again_is_refused(args, said, tmp_path, capsys):
    """Which of two values wins would be a guess (before, --set won whatever the order)."""
    assert main(["train", *args, "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and said in err[0], err
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


@pytest.mark.parametrize("args,field", [(["--dataset", "cifar"], "--dataset"), (["--dtype", "float16"], "--dtype"),
                                        (["--line-frequency", "55"], "--line-frequency"), (["--hidden", "a"], "--hidden")])
def test_a_value_outside_the_field_type_is_one_line(args, field, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["train", *args])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hil: error: argument " + field), err


@pytest.mark.parametrize("args,field", [
    (["--sigma", "1e-3"], "noise.sigma"), (["--nplc", "10"], "noise.nplc"), (["--flicker", "1e-5"], "noise.flicker_floor_V"),
    (["--drift", "1e-6"], "noise.drift_V_per_s"), (["--replicas", "4"], "train.replicas"),
    (["--overhead", "0.01"], "noise.overhead_s"), (["--line-frequency", "60"], "noise.line_frequency_hz"),
    (["--device-model", "ecram"], "devices.model"), (["--set", "noise.sigma=2e-5"], "noise.sigma"),
])
def test_a_bench_refuses_simulator_settings_naming_each(args, field, tmp_path, capsys):
    flag = args[0] if args[0] != "--set" else None
    got = main(["train", "--no-progress", "--lab", str(EXAMPLE_LAB), *args, "--runs-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert got == 2 and len(err) == 1, err
    assert f"--lab: {field} describe" in err[0] and (flag is None or flag in err[0]), err[0]
    assert not any(tmp_path.iterdir())  # refused before anything was written or connected


def test_a_bench_refusal_names_every_setting_given(tmp_path, capsys):
    got = main(["train", "--no-progress", "--lab", str(EXAMPLE_LAB), "--sigma", "1e-3", "--nplc", "10", "--flicker",
                "1e-5", "--drift", "1e-6", "--replicas", "2", "--runs-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert got == 2
    assert ("noise.sigma, noise.nplc, noise.flicker_floor_V, noise.drift_V_per_s, train.replicas describe" in err
            and "(--sigma, --nplc, --flicker, --drift, --replicas)" in err), err


def test_defaults_and_a_saved_config_are_not_simulator_settings():
    assert simulated_only_settings(build_config({}, {})) == []
    again = RunConfig.model_validate(build_config({}, {}).model_dump(mode="json"))  # a run's config.yaml: every key
    assert simulated_only_settings(again) == []
    assert simulated_only_settings(build_config({}, {"noise.samples": 8, "ep.beta": 0.5})) == []  # a bench does these


def test_simulator_only_is_said_once_per_flag():
    """The refusal note is added to every simulator-only flag's help; a description saying it too would print it twice."""
    for action in subcommand(build_parser(), "train")._actions:
        assert (action.help or "").count("simulator only") <= 1, action.option_strings
    assert all(line.count("simulator only") <= 1 for line in flag_table().splitlines())
