"""Errors a user can cause. The CLI prints their message without a traceback and exits non-zero."""

from __future__ import annotations


class RestorerError(Exception):
    """Base class: the message says what went wrong and what to do about it."""

    exit_code = 1


class UsageError(RestorerError):
    """Bad command-line arguments or option values (exit status 2, like argparse)."""

    exit_code = 2


class WeightsNotFoundError(RestorerError):
    """A model's weight file is not on disk."""


class CheckpointError(RestorerError):
    """A weight file cannot be read or does not fit the architecture."""


class ImageReadError(RestorerError):
    """An input file is not a readable image."""


class ImageWriteError(RestorerError):
    """An output file could not be written."""
