"""The core: the backend contract (with the input doubling and node sizes), the EP rule, the configs and the
device-model configs, and the facts they share: the strict base model, YAML reader and error formatter
(schema), the named seed streams (seeds), the mains frequencies (mains) and the process set-up (process).

It imports nothing else of the project, so the simulator, the drivers, calibration and the application all
build on it without import cycles (tests/test_layers.py checks this; tests/test_one_home.py checks that each
shared fact is written here once).
"""
