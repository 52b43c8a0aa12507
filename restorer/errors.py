"""Errors a user can cause. The CLI prints their message without a traceback and exits non-zero."""

from __future__ import annotations


class RestorerError(Exception):
    """Base class: the message says what went wrong and what to do about it."""

    exit_code = 1


class UsageError(RestorerError):
    """Bad command-line arguments or option values (exit status 2, like argparse)."""

    exit_code = 2


class MissingExtraError(UsageError):
    """An optional dependency a command needs is not installed; the message names the extra that
    installs it (see :func:`restorer._compat.require_extra`)."""


class WeightsNotFoundError(RestorerError):
    """A model's weight file is not on disk."""


class CheckpointError(RestorerError):
    """A weight file cannot be read or does not fit the architecture."""


class ImageReadError(RestorerError):
    """An input file is not a readable image."""


class ImageWriteError(RestorerError):
    """An output file could not be written."""


class OutputExistsError(ImageWriteError):
    """An output file already exists and replacing it was not asked for (``--overwrite``)."""

    @classmethod
    def at(cls, path: object) -> OutputExistsError:
        return cls(f"{path} already exists; it is kept (--overwrite replaces it)")


def one_line_message(exc: BaseException) -> str:
    """A one-line description of a per-file failure, for the summary a batch prints at its end.

    :class:`RestorerError` messages are written for users and kept as they are; anything else (a
    library's own exception, ``MemoryError`` from a huge image) is named by its type and flattened to
    one line, so a batch can report it and go on with the next file.
    """
    if isinstance(exc, RestorerError):
        return str(exc)
    if isinstance(exc, MemoryError):  # numpy's _ArrayMemoryError included
        detail = " ".join(str(exc).split())
        return "not enough memory for this file" + (f" ({detail})" if detail else "")
    detail = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
