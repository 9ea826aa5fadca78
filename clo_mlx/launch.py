"""`python -m clo_mlx.launch [mlx.launch options] -- clo-mlx ...`: `mlx.launch` with an exit status.

`mlx.launch` (mlx 0.32) stops every rank when one fails, prints which one, and then exits 0
anyway, so a script cannot tell a failed run from a finished one. This runs mlx.launch's own
`main()` unchanged, notes the exit status of each rank it started (ring and jaccl backends), and
exits 1 if any rank failed or was stopped. A first Ctrl-C is left to the ranks (see below).
Should mlx's internals change, it still launches and exits as `mlx.launch` does.
"""

from __future__ import annotations

import os
import select
import signal
import stat
import sys


def _first_ctrl_c(signum, frame) -> None:
    """Ctrl-C reaches the local ranks through the terminal; they agree to stop after the current
    step and rank 0 saves a checkpoint, while the launcher keeps relaying their output. A second
    Ctrl-C interrupts the launcher too."""
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _select_output_first(rlist, wlist, xlist, timeout=None):
    """select() for mlx.launch's relay threads. They ask for the ranks' stdin pipes, which are
    always writable, so their select never waits and each thread spins a CPU core that the ranks
    need. Wait for output (or the timeout) first, then report which pipes take input."""
    if not wlist or not timeout:
        return select.select(rlist, wlist, xlist, timeout)
    readable, _, errors = select.select(rlist, [], xlist, timeout)
    _, writable, _ = select.select([], wlist, [], 0)
    return readable, writable, errors


def _stdin_is_devnull() -> bool:
    try:
        st, null = os.fstat(0), os.stat(os.devnull)
    except OSError:
        return False
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == null.st_rdev


def main() -> int:
    from mlx._distributed_utils import launch

    if getattr(launch, "select", None) is select.select:
        launch.select = _select_output_first
    if _stdin_is_devnull():
        # /dev/null is always readable (EOF), so mlx.launch's input relay loop would spin on it;
        # an open pipe that never gets data waits instead (there is nothing to relay either way).
        read_end, _ = os.pipe()
        os.dup2(read_end, 0)

    statuses: dict[int, tuple] = {}
    cls = getattr(launch, "RemoteProcess", None)
    original = getattr(cls, "exit_status", None)
    if isinstance(original, property):

        def exit_status(self):
            status = original.fget(self)
            if status[0] is not None:
                statuses[id(self)] = status
            return status

        cls.exit_status = property(exit_status)
    signal.signal(signal.SIGINT, _first_ctrl_c)
    launch.main()
    failed = any(code != 0 or killed for code, killed in statuses.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
