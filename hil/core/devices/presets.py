"""Published device fits, as aihwkit's presets write them (normalized units; see `config`).

Cite the measured device, not the simulator: each preset names the paper its
numbers were fitted to. Values: aihwkit's preset devices (ReRamESPresetDevice,
ReRamSBPresetDevice, EcRamPresetDevice, EcRamMOPresetDevice, CapacitorPresetDevice,
IdealizedPresetDevice, GokmenVlasovPresetDevice), collected in shared/science-notes.md.
"""

from __future__ import annotations

from hil.core.devices.config import DeviceModelConfig

_GONG = ("Gong et al., Signal and noise extraction from analog memory elements for neuromorphic computing, "
         "Nat. Commun. 9, 2102 (2018)")
_TANG = "Tang et al., ECRAM as scalable synaptic cell for high-speed, low-power neuromorphic computing, IEDM 2018"
_KIM = "Kim et al., Metal-oxide based, CMOS-compatible ECRAM for deep learning accelerator, IEDM 2019"
_LI = "Li et al., Capacitor-based cross-point array for analog neural network with record symmetry and linearity, VLSI 2018"
_GV = ("Gokmen & Vlasov, Acceleration of deep neural network training with resistive cross-point devices, "
       "Front. Neurosci. 10:333 (2016)")

PRESETS: dict[str, DeviceModelConfig] = {
    "ideal": DeviceModelConfig(name="ideal", kind="ideal", citation="exact programming (no device model)"),
    "reram-es": DeviceModelConfig(
        name="reram-es", citation=_GONG, kind="exp", dw_min=0.00135, up_down=0.259, w_min=-1.0, w_max=1.0,
        a=-0.5, b=-0.5, gamma_exp_up=5.0, gamma_exp_down=5.0, A_up=-1.18445, A_down=-0.081404,
        dw_min_dtod=0.2, up_down_dtod=0.05, w_min_dtod=0.3, w_max_dtod=0.3, dw_min_std=5.0, write_noise_std=75.0),
    "reram-sb": DeviceModelConfig(
        name="reram-sb", citation=_GONG + " (a looser soft-bounds fit)", kind="soft_bounds", dw_min=0.002, up_down=0.0,
        w_min=-0.75, w_max=1.25, dw_min_dtod=0.3, up_down_dtod=0.01, w_min_dtod=0.24, w_max_dtod=0.4,
        dw_min_std=3.75, write_noise_std=56.0),
    "ecram": DeviceModelConfig(
        name="ecram", citation=_TANG, kind="linear", dw_min=0.002, up_down=0.0, w_min=-0.83, w_max=1.17,
        gamma_up=0.1153, gamma_down=0.5085, dw_min_dtod=0.1, up_down_dtod=0.01, w_min_dtod=0.05, w_max_dtod=0.05,
        dw_min_std=0.3),
    "ecram-mo": DeviceModelConfig(
        name="ecram-mo", citation=_KIM, kind="linear", dw_min=2.82e-4, up_down=0.0, w_min=-0.83, w_max=1.17,
        gamma_up=0.4152, gamma_down=0.7342, dw_min_dtod=0.1, up_down_dtod=0.01, w_min_dtod=0.05, w_max_dtod=0.05,
        dw_min_std=2.0),
    "capacitor": DeviceModelConfig(
        name="capacitor", citation=_LI + " (its leakage is not modeled)", kind="linear", dw_min=0.005, up_down=0.0,
        w_min=-1.0, w_max=1.0, gamma_up=0.05, gamma_down=0.05, dw_min_dtod=0.1, up_down_dtod=0.06,
        w_min_dtod=0.07, w_max_dtod=0.07, dw_min_std=0.3),
    "idealized": DeviceModelConfig(
        name="idealized", citation=_GV + " (about 10,000 states)", kind="constant", dw_min=2e-4, w_min=-1.0, w_max=1.0,
        dw_min_dtod=0.3, up_down_dtod=0.0, w_min_dtod=0.3, w_max_dtod=0.3, dw_min_std=0.3),
    "gokmen-vlasov": DeviceModelConfig(
        name="gokmen-vlasov", citation=_GV + " (about 1,200 states)", kind="constant", dw_min=0.0016, w_min=-1.0,
        w_max=1.0, dw_min_dtod=0.3, up_down_dtod=0.01, w_min_dtod=0.3, w_max_dtod=0.3, dw_min_std=0.3),
}
