"""`python -m clo_mlx.launch [mlx.launch options] -- clo-mlx ...`: `mlx.launch` with an exit status.

`mlx.launch` (mlx 0.32) stops every rank when one fails, prints which one, and then exits 0
anyway, so a script cannot tell a failed run from a finished one. This runs mlx.launch's own
`main()` unchanged, notes the exit status of each rank it started (ring and jaccl backends), and
exits 1 if any rank failed or was stopped. A first Ctrl-C is left to the ranks (see below).
Should mlx's internals change, it still launches and exits as `mlx.launch` does.
"""

from __future__ import annotations

import signal
import sys


def _first_ctrl_c(signum, frame) -> None:
    """Ctrl-C reaches the local ranks through the terminal; they agree to stop after the current
    step and rank 0 saves a checkpoint, while the launcher keeps relaying their output. A second
    Ctrl-C interrupts the launcher too."""
    signal.signal(signal.SIGINT, signal.default_int_handler)


def main() -> int:
    from mlx._distributed_utils import launch

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
