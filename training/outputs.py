"""What a training run owns on disk: its ``model_prefix``, held under a lock, and the files written there.

One run at a time per prefix: :class:`PrefixLock` takes an exclusive ``fcntl.flock`` on ``PREFIX.lock``
for the whole run, so a second training with the same prefix fails at once with one line instead of
overwriting the first one's checkpoints and CSV. The lock also proves the folder writable (it is created
there), and, since no other process may write under the prefix while it is held, every temporary file
left there by a killed run (``PREFIX-*.<pid>-<n>.part``, the older ``*.tmp<pid>``) is removed when it is
taken. The kernel releases the lock when the process ends, however it ends (the lock itself is
:func:`common.fileio.exclusive_lock`, shared with packing).
"""
import contextlib
import glob
import os
import re
import tempfile

from common.fileio import exclusive_lock, temporary_name

from .errors import ParameterError

# temporary names of checkpoint files and the metrics CSV: ours (common.fileio.temporary_name), the older PATH.tmp<pid> of checkpoints and PATH.tmp of the CSV
_TEMPORARY = r'-(\d{4,}\.((head\.)?params|states|json)|metrics\.csv)\.(\d+-\d+\.part|tmp\d*)'


class PrefixLock:
    """Exclusive lock on ``PREFIX.lock`` for a whole run (:func:`common.fileio.exclusive_lock`);
    :meth:`release` frees it.

    Raises
    ------
    ParameterError
        The folder of the prefix cannot hold files (a file in the way, no permission, read-only).
    UsageError
        Another training holds the lock (its PID is named).
    """

    def __init__(self, prefix):
        folder = os.path.dirname(os.path.abspath(os.fspath(prefix) + '.lock'))
        try:
            os.makedirs(folder, exist_ok=True)
            probe = tempfile.TemporaryFile(dir=folder)
        except OSError as err:  # the reason is bound now: err is unset once the except block ends
            raise ParameterError(lambda n, why=_why(err): f'{n("model_prefix")} {prefix}: cannot write in '
                                                          f'{folder} ({why})') from None
        probe.close()
        self._held = contextlib.ExitStack()
        self._held.enter_context(exclusive_lock(os.fspath(prefix) + '.lock', f'{prefix} (another training)'))

    def release(self):
        self._held.close()

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
