"""An output file that appears only when complete: written under a temporary name, renamed at the end.

``decode-file`` writes its decisions through :class:`PartialFile`. An interrupted or failed run must leave
neither an output that looks complete nor the temporary file. The CLI's signal handlers raise
:class:`~neurospeech.errors.Interrupted` in the main thread at whatever Python line it is on, so the clean-up
must know the temporary file's name at every line from the moment the file exists: :meth:`PartialFile.open`
stores the name *before* it creates the file (mode ``x``: it never takes over a file that is already there).
``tempfile.mkstemp`` names the file only when it returns; a SIGHUP that landed between its ``open`` and its
return left a ``.partial`` file behind in a loaded CI run (session 16). ``tests/test_partial_file.py`` raises
the interrupt at every line and return of :meth:`PartialFile.open` in turn.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
from pathlib import Path
from typing import IO

from ..errors import ConfigError

log = logging.getLogger(__name__)

__all__ = ["PartialFile", "write_error"]


def write_error(target: Path | None, exc: OSError) -> ConfigError:
    """The :class:`ConfigError` (exit code 2) for an output that cannot be written, naming the cause and the fix."""
    where = str(target) if target is not None else "the output"
    if target is not None and exc.errno == errno.ENOENT and not target.parent.exists():
        return ConfigError(
            f"cannot write the decisions to {where!r}: its folder {str(target.parent)!r} does not exist; create it "
            f"(mkdir -p {str(target.parent)!r}) or choose another --out. Nothing was written"
        )
    return ConfigError(
        f"cannot write the decisions to {where!r}: {exc.strerror or exc} (errno {exc.errno}); free disk space or "
        "choose a writable --out. Nothing was written there"
    )


class PartialFile:
    """A text file written as ``.NAME.XXXXXXXXXXXX.partial`` next to ``target`` and renamed to it by :meth:`commit`.

    Same folder, so the rename is atomic. Use::

        out = PartialFile(target)  # no file yet
        try:
            fh = out.open()
            ...  # write to fh
            out.commit()
        finally:
            out.discard()  # nothing to do after commit; otherwise removes the temporary file

    Parameters
    ----------
    target : Path
        The final file. An existing one is replaced only by :meth:`commit`.
    """

    def __init__(self, target: Path) -> None:
        self.target = Path(target)
        #: the temporary file's name, set before the file exists (None: not created, or renamed to target)
        self.path: Path | None = None
        self.fh: IO[str] | None = None

    def open(self) -> IO[str]:
        """Create the temporary file and return it open for writing (UTF-8 text).

        Raises
        ------
        ConfigError
            ``target`` is a folder, or its folder is missing or not writable.
        """
        if self.target.is_dir():
            raise ConfigError(f"--out {str(self.target)!r} is a directory; give a file name such as decisions.jsonl")
        folder = self.target.parent if str(self.target.parent) else Path(".")
        for _ in range(100):
            self.path = folder / f".{self.target.name}.{secrets.token_hex(6)}.partial"
            try:
                # "x": O_EXCL; one call from the name to the file object (no bare descriptor to lose), with the
                # permissions of a plain open() (0o666 less the umask), as the final file should have
                self.fh = open(self.path, "x", encoding="utf-8")
            except FileExistsError:  # another file's name (48 random bits): not ours to remove
                self.path = None
                continue
            except OSError as exc:
                self.path = None
                raise write_error(self.target, exc) from exc
            return self.fh
        raise ConfigError(
            f"cannot create a temporary file next to {str(self.target)!r}: 100 random names were taken; "
            "remove the folder's .*.partial files"
        )

    def commit(self) -> None:
        """Flush, sync and close the file, then rename it to ``target``.

        Raises
        ------
        ConfigError
            The final write, sync or rename failed (full disk ...); the temporary file stays for :meth:`discard`.
        """
        if self.fh is None or self.path is None:
            raise RuntimeError("PartialFile.commit() before open()")
        try:
            self.fh.flush()
            os.fsync(self.fh.fileno())
            self.fh.close()
            os.replace(self.path, self.target)
        except OSError as exc:
            raise write_error(self.target, exc) from exc
        self.path = None

    def discard(self) -> None:
        """Close and remove the temporary file, if there is one (after :meth:`commit`: nothing to do)."""
        if self.fh is not None:
            try:
                self.fh.close()
            except OSError:  # a full disk can fail the final flush too; the file goes anyway
                log.debug("closing %s failed", self.path, exc_info=True)
        if self.path is None:
            return
        try:
            self.path.unlink()
        except FileNotFoundError:  # interrupted before the file was created, or after the rename
            pass
        except OSError:
            log.warning("could not remove the unfinished output %s", self.path)
        self.path = None
