"""Children that die with their parent: on Linux, ``PR_SET_PDEATHSIG`` = SIGTERM set between fork and exec.

A child started with ``preexec_fn=die_with_parent(os.getpid())`` gets SIGTERM from the kernel when its parent
dies, even one killed with SIGKILL. Caveat from prctl(2): the signal is sent when the *thread* that started the
child exits, so start children from a thread that outlives them (the main thread, a long-lived event loop).
Elsewhere than Linux there is no prctl and nothing is asked of the kernel.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
from collections.abc import Callable
from typing import Final

PR_SET_PDEATHSIG: Final = 1  # <linux/prctl.h>


def load_prctl() -> Callable[[int, int, int, int, int], int] | None:
    """libc's ``prctl``, or None where there is none (not Linux, no libc)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    prctl: Callable[[int, int, int, int, int], int] = libc.prctl
    return prctl


# Loaded here, once: the code between fork and exec must not import or allocate more than it has to.
_PRCTL: Final = load_prctl()


def die_with_parent(parent_pid: int) -> Callable[[], None]:
    """A ``preexec_fn`` asking the kernel to SIGTERM the child when ``parent_pid`` (the caller) goes away.

    It calls only prctl and getppid (no locks, no allocation worth the name), as code between fork and exec must.
    """

    def preexec() -> None:
        if _PRCTL is None:
            return
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        # The parent may have died between fork and prctl: then nobody would ever send the signal.
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec
