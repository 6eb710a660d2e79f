"""Print the ATEN_CPU_CAPABILITY that `make test` reruns the notebooks under: another kernel set than this run's.

AVX-512 machines check the AVX2 kernels (most laptops), AVX2 machines the plain ones; a run already forced to
the plain kernels checks AVX2 where the CPU has it. Prints nothing where there is no other set to try.
"""

from pathlib import Path

import torch


def other_capability(own: str, cpu_flags: str) -> str:
    if own == "AVX512":
        return "avx2"
    if own == "DEFAULT":
        return "avx2" if " avx2" in cpu_flags else ""
    return "default"  # AVX2, or an ARM set such as SVE256


if __name__ == "__main__":
    cpuinfo = Path("/proc/cpuinfo")
    flags = cpuinfo.read_text() if cpuinfo.exists() else ""
    print(other_capability(torch.backends.cpu.get_cpu_capability(), flags))
