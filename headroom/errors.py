"""Exit codes every headroom command shares (documented in the README)."""

EXIT_OK = 0
EXIT_NO = 1  # `headroom check`: the guard would not grant it now
EXIT_CONFIG = 2  # bad configuration or command line: nothing was started
EXIT_BIND = 3  # the listen address is in use or not allowed
EXIT_SOURCE = 4  # a required source (e.g. /dev/kmsg with require_kmsg) cannot be read
EXIT_STATE = 5  # a state database is corrupt (store_on_corrupt = "refuse") or cannot be opened


class HeadroomError(Exception):
    """An error a person can act on; `exit_code` says how the process ends."""

    def __init__(self, message: str, exit_code: int = EXIT_CONFIG):
        super().__init__(message)
        self.exit_code = exit_code
