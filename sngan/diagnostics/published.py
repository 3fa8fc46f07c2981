"""Published SNGAN numbers that an experiment preset reproduces, each with the protocol it was
measured with (sngan.diagnostics.metrics.PROTOCOLS) and where it was printed.

The values are the printed text (mean ± std; Table 2's ResNet std is over training seeds).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Published:
    source: str      # where the numbers are printed, and which row
    protocol: str    # the sample counts they were measured with (sngan.diagnostics.metrics.PROTOCOLS)
    isc: str         # Inception score as printed
    fid: str         # FID as printed


MIYATO = "Miyato et al. 2018 (arXiv:1802.05957), Table 2"
MIMICRY = "kwotsin/mimicry README"

PUBLISHED: dict[str, list[Published]] = {
    "cifar10_cnn": [Published(f"{MIYATO}: SN-GANs, Eq. (17), standard CNN, CIFAR-10", "sngan",
                              "7.58 ± .12", "25.5")],
    "cifar10_resnet": [Published(f"{MIYATO}: SN-GANs, Eq. (17), ResNet, CIFAR-10", "sngan",
                                 "8.22 ± .05", "21.7 ± .21")],
    "stl10_resnet": [Published(f"{MIYATO}: SN-GANs, Eq. (17), ResNet, STL-10", "sngan", "9.10 ± .04", "40.1 ± .50"),
                     Published(f"{MIMICRY}, Baselines, STL-10 48x48: SNGAN", "mimicry", "8.04 ± 0.07", "39.56 ± 0.10")],
    "celeba64": [Published(f"{MIMICRY}, Baselines, CelebA 64x64: SNGAN", "mimicry", "2.68 ± 0.01", "5.71 ± 0.02")],
}
