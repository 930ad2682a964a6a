"""The one exception type of the data layer.

Bad input (a missing file, an unreadable directory, a manifest of another
format version, ...) raises `DataError` with a one-line message; the CLI prints
just that line and exits non-zero, so users never read a traceback wall for a
typo in a path. It is bltdiff's own DataError, so `bltdiff.main` reports it the
same way.
"""

from bltdiff.errors import DataError

__all__ = ['DataError']
