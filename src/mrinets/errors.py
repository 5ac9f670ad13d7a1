"""Errors that reach users.

Every problem with what a user gave us (a file, a number, a folder) is an
:class:`InputError`: the command line prints it as one line,
``mrinets: error: <where>: <problem>``, and exits with status 2. Anything else
that is raised is a bug and keeps its traceback.
"""

from __future__ import annotations

from os import PathLike

__all__ = [
    "InputError",
    "UnreadableFileError",
    "NotNiftiError",
    "DimensionError",
    "NonFiniteError",
    "EmptyImageError",
    "GridMismatchError",
    "ArgumentError",
    "OutputError",
    "RegistrationError",
    "ConfigError",
    "EXIT_INPUT_ERROR",
]

EXIT_INPUT_ERROR = 2


class InputError(Exception):
    """A problem with user input, reported as ``<where>: <problem>``.

    Parameters
    ----------
    where : str or path-like
        The file, folder or command-line option the problem is about.
    problem : str
        One sentence, without a trailing newline, saying what is wrong.
    """

    def __init__(self, where: str | PathLike, problem: str) -> None:
        self.where = str(where)
        self.problem = " ".join(str(problem).split())
        super().__init__(f"{self.where}: {self.problem}")


class UnreadableFileError(InputError):
    """The file is missing or cannot be read."""


class NotNiftiError(InputError):
    """The file exists but is not a NIfTI-1/NIfTI-2 image."""


class DimensionError(InputError):
    """The image has the wrong number of dimensions or volumes."""


class NonFiniteError(InputError):
    """The image holds NaN or infinite voxels."""


class EmptyImageError(InputError):
    """The image is constant or zero everywhere, or holds no brain."""


class GridMismatchError(InputError):
    """Two images that must share a voxel grid do not."""


class ArgumentError(InputError):
    """A numeric or textual argument is out of range or malformed."""


class OutputError(InputError):
    """The output location cannot be written."""


class RegistrationError(InputError):
    """The image could not be aligned to a template (no brain, or a poor match)."""


class ConfigError(InputError, ValueError):
    """A configuration field out of range; ``field`` names it.

    Library users catch it as a ``ValueError``; the command line reports it
    under the flag that set the field.
    """

    @property
    def field(self) -> str:
        return self.where
