"""Errors a user can fix, printed by the command-line tools as one line."""


class BltdiffError(Exception):
  """Base class: the message alone says what is wrong and where."""


class ConfigError(BltdiffError, ValueError):
  """A config field has a bad value; the message starts with the field's name."""


class DataError(BltdiffError, ValueError):
  """Input data is missing, unreadable or of another format version."""
