"""Every exit code a headroom command can end with, each a distinct number (the README's table lists them)."""

EXIT_OK = 0
# the other side answered no: `check` would not grant it now, `thaw` found no such frozen process, the worker refused
# a batch call
EXIT_NO = 1
EXIT_CONFIG = 2  # bad configuration or command line (or a request the guard rejects as malformed): nothing was started
EXIT_BIND = 3  # the listen address is in use or not allowed
EXIT_SOURCE = 4  # a required source (e.g. /dev/kmsg with require_kmsg) cannot be read
EXIT_STATE = 5  # a state database is corrupt (store_on_corrupt = "refuse") or cannot be opened
EXIT_TOKEN = (
    6  # the API token (setting, $HEADROOM_TOKEN or the state dir's token file) is unusable: empty, short, unreadable
)
EXIT_UNREACHABLE = 69  # the guard or the worker cannot be reached (EX_UNAVAILABLE): check, run, status, thaw, batch
EXIT_NOT_GRANTED = 75  # `run`: the lease was refused or the wait ran out (EX_TEMPFAIL: try again later)
EXIT_CANNOT_EXECUTE = 126  # `run`: CMD exists but cannot be executed (as a shell says)
EXIT_NOT_FOUND = 127  # `run`: CMD was not found (as a shell says)
EXIT_INTERRUPTED = (
    130  # Ctrl-C before anything ran (128 + SIGINT); `run` withdrew its queued request (SIGHUP: 129, SIGTERM: 143)
)
# Besides these, `headroom run` ends with CMD's own status, 128+N when signal N ended CMD.


class HeadroomError(Exception):
    """An error a person can act on; `exit_code` says how the process ends."""

    def __init__(self, message: str, exit_code: int = EXIT_CONFIG):
        super().__init__(message)
        self.exit_code = exit_code
