"""training.host_memory: freed host memory stays in the process for the next step (glibc), and the user can say no."""

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt: Linux with glibc only")

# A 256 MiB tensor allocated, touched and freed: with glibc's defaults its pages go back to the OS (an mmap of its
# own), with the thresholds raised they stay in the process for the next allocation.
PROBE = """
import sys
from fgssl.training import host_memory
from fgssl.training.cli import console_entry

def rss():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) * 1024

def main(argv):
    import torch
    before = rss()
    x = torch.ones(64 * 2**20)  # 256 MiB
    del x
    print(host_memory._applied, (rss() - before) / 2**20)

console_entry(main, "probe")([])
"""


def _probe(**env) -> tuple[str, float]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "FGSSL_KEEP"))}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**environment, **env}, capture_output=True, text=True,
                         check=True).stdout.split()
    return out[0], float(out[1])


def test_console_entry_keeps_freed_memory_and_the_user_can_turn_it_off():
    applied, kept_mib = _probe()
    assert applied == "True" and kept_mib > 200  # the freed 256 MiB stayed for reuse
    applied, kept_mib = _probe(FGSSL_KEEP_FREED_MEMORY="0")
    assert applied == "False" and kept_mib < 50  # glibc's default: handed back at once
    applied, _ = _probe(MALLOC_TRIM_THRESHOLD_="1000000")  # the user's own tuning is left alone
    assert applied == "False"
