"""Checking where a command will write, before it does any work.

A command that trains, reconstructs or scores for minutes and then fails to write its result
wastes the user's time; one that fails with ``IsADirectoryError`` or ``PermissionError``
deep inside matplotlib says little. These helpers look at the output path first and raise a
:class:`OutputPathError` (a ``ValueError``, which ``l2i`` prints as one line) naming it.

Writability is tested by doing, not by ``os.access``: a probe file is created (and removed) in
the folder, so read-only mounts and permissions are caught as they are, also for root.
"""
from __future__ import annotations

import tempfile
from pathlib import Path


class OutputPathError(ValueError):
    """An output path cannot be written (a folder where a file is expected, or the other way round,
    or no permission); the message names it."""


def _probe_folder(folder: Path, what: str) -> None:
    """Create ``folder`` (with parents) and a temporary file in it; OutputPathError if either fails."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):  # a file (or a file among the parents) where the folder should be
        raise OutputPathError(f"cannot create the {what} {folder}: it (or a folder above it) is an existing file") from None
    except PermissionError:
        raise OutputPathError(f"cannot create the {what} {folder}: permission denied") from None
    except OSError as err:  # a read-only file system, a name too long, ...
        raise OutputPathError(f"cannot create the {what} {folder}: {err.strerror or err}") from None
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".l2i-write-test-"):
            pass
    except PermissionError:
        raise OutputPathError(f"cannot write into the {what} {folder}: permission denied (read-only?)") from None
    except OSError as err:
        raise OutputPathError(f"cannot write into the {what} {folder}: {err.strerror or err}") from None


def check_output_folder(folder: str | Path, what: str = "output folder") -> Path:
    """Make sure ``folder`` is (or can be made) a writable folder; creates it. Returns it as a Path.

    Raises:
        OutputPathError: ``folder`` is an existing file, or cannot be created or written into.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputPathError(f"the {what} {folder} is an existing file, not a folder; choose another path")
    _probe_folder(folder, what)
    return folder


def check_output_file(path: str | Path, what: str = "output file", example: str | None = None) -> Path:
    """Make sure the file ``path`` can be written: not a folder, its folder creatable and writable.

    The folder is created; the file itself is not (an existing file is left untouched).
    ``example`` is a file name suggested inside the folder when ``path`` is one.

    Raises:
        OutputPathError: ``path`` is an existing folder, or its folder cannot be created or written into.
    """
    path = Path(path)
    if path.is_dir():
        hint = f" such as {path / example}" if example else " inside it"
        raise OutputPathError(f"the {what} {path} is an existing folder; give a file path{hint}")
    _probe_folder(path.parent, f"folder of the {what}")
    return path


__all__ = ["OutputPathError", "check_output_folder", "check_output_file"]
