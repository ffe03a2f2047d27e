"""What a training run owns on disk: its ``model_prefix``, held under a lock, and the files written there.

One run at a time per prefix: :class:`PrefixLock` takes an exclusive ``fcntl.flock`` on ``PREFIX.lock``
for the whole run, so a second training with the same prefix fails at once with one line instead of
overwriting the first one's checkpoints and CSV. The lock also proves the folder writable (it is created
there), and, since no other process may write under the prefix while it is held, every temporary file
left there by a killed run (``PREFIX-*.<pid>-<n>.part``, the older ``*.tmp<pid>``) is removed when it is
taken. The kernel releases the lock when the process ends, however it ends; ``PREFIX.lock`` itself stays
(removing it could let a third run lock a file the second one still holds open).
"""
import contextlib
import errno
import fcntl
import glob
import os
import re

from common.errors import UsageError
from common.fileio import temporary_name

from .errors import ParameterError

# temporary names of checkpoint files and the metrics CSV: ours (common.fileio.temporary_name), the older PATH.tmp<pid> of checkpoints and PATH.tmp of the CSV
_TEMPORARY = r'-(\d{4,}\.(params|states|json)|metrics\.csv)\.(\d+-\d+\.part|tmp\d*)'


class PrefixLock:
    """Exclusive lock on ``PREFIX.lock`` (``fcntl.flock``, non-blocking); :meth:`release` frees it.

    Raises
    ------
    ParameterError
        The folder of the prefix cannot hold files (a file in the way, no permission, read-only).
    UsageError
        Another process holds the lock (its PID, read from the file, is named).
    """

    def __init__(self, prefix):
        self.path = os.fspath(prefix) + '.lock'
        folder = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(folder, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise ParameterError(lambda n: f'{n("model_prefix")} {prefix}: cannot write in {folder} '
                                           f'({_why(err)})') from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = self._holder()
            os.close(self.fd)
            self.fd = None
            if err.errno not in (errno.EAGAIN, errno.EACCES):
                raise UsageError(f'cannot lock {self.path}: {_why(err)}') from None
            raise UsageError(f'{prefix} is in use by another training ({holder} holds {self.path}); '
                             'wait for it to finish or give another model_prefix') from None
        with contextlib.suppress(OSError):  # the PID only names the holder in the next run's message
            os.ftruncate(self.fd, 0)
            os.write(self.fd, f'{os.getpid()}\n'.encode())

    def _holder(self):
        with contextlib.suppress(OSError, ValueError):
            return f'process {int(os.pread(self.fd, 32, 0).decode().strip())}'
        return 'another process'

    def release(self):
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def _why(err):
    if isinstance(err, (NotADirectoryError, FileExistsError)):
        return 'a file is in the way of the folder'
    return err.strerror or str(err)


def remove_stale_temporaries(prefix):
    """Delete the temporary files a killed run left under ``prefix``; returns their paths.

    Only call it while holding the prefix's :class:`PrefixLock`: then no live process writes them.
    """
    prefix = os.fspath(prefix)
    removed = []
    pattern = re.compile(re.escape(prefix) + _TEMPORARY)
    for path in glob.glob(glob.escape(prefix) + '-*'):
        if pattern.fullmatch(path) and os.path.isfile(path):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
                removed.append(path)
    return sorted(removed)
