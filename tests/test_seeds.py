"""The named seed streams give the generator seeds the recorded results were made with (issue 22 moved the
formulas into hil.core.seeds; a changed number would change every seeded result of its purpose)."""

import pytest

from hil.core.seeds import STREAMS, replica_seeds, seed_stream


@pytest.mark.parametrize("seed", [0, 1, 7, 123456])
@pytest.mark.parametrize("index", [0, 1, 3])
def test_each_purpose_keeps_its_formula(seed, index):
    assert seed_stream(seed, "init", index) == seed * 1000003 + index
    assert seed_stream(seed, "device_spread", index) == seed * 1000003 + 7919 * (index + 1) + 104729
    assert seed_stream(seed, "device_pulses") == seed * 7777 + 12345
    assert seed_stream(seed, "epoch_order", index) == seed * 100_003 + index
    assert seed_stream(seed, "emulator_chip") == seed + 17
    assert seed_stream(seed, "emulator_devices") == seed + 29


def test_an_unknown_purpose_is_refused_and_replicas_count_up():
    with pytest.raises(ValueError, match="seed purpose 'noise': one of init"):
        seed_stream(0, "noise")  # type: ignore[arg-type]
    assert replica_seeds(5, 3) == [5, 6, 7]
    assert set(STREAMS) == {"init", "device_spread", "device_pulses", "epoch_order", "emulator_chip",
                            "emulator_devices"}
