"""One command at a time per run folder: an exclusive lock held for the life of the command.

``RUN_DIR/.lock`` is locked with ``fcntl.flock`` (released by the kernel when the process ends, even
on kill -9). A second command on the same folder (another fit with the same ``--out``, a resume of a
run still training) is refused in one line instead of mixing its outputs with the first's. The lock
file stays in the folder; it is empty. On systems without ``fcntl`` (Windows) there is no lock.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cvtransfer.errors import ConfigError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".lock"


@contextmanager
def locked(run_dir: Path) -> Iterator[None]:
    """Hold the exclusive lock of ``run_dir`` (which must exist) while the block runs."""
    if fcntl is None:
        yield
        return
    try:
        handle = (run_dir / LOCK_FILE).open("a")
    except OSError as err:
        raise ConfigError(f"{run_dir} cannot be written ({err.strerror}): choose another --out") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"{run_dir} is in use by another cvtransfer command: wait for it to finish, or "
                              "choose another --out") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
