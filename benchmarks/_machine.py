"""What machine a benchmark ran on, printed with its figures."""

import os
import platform

import hil  # noqa: F401  (before torch: hil sets the OpenMP wait policy that torch's import starts with)

# isort: split
import torch


def describe(device: str = "cpu") -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} threads"
    if device.startswith("cuda") and torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name()}"
    return text
