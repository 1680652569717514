"""The core: the backend contract, the EP rule, the configs and the device-model configs.

It imports nothing else of the project, so the simulator, the drivers, calibration and the application all
build on it without import cycles (tests/test_layers.py checks this).
"""
