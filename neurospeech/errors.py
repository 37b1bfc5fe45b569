"""One exception hierarchy for neurospeech.

Third-party errors are translated at the boundary (``raise NewError(...) from exc``) so that callers and the
CLI only ever need to catch :class:`NeurospeechError`. Every message names the problem, the offending value
and the fix.
"""

from __future__ import annotations

__all__ = [
    "ArtifactError",
    "ConfigError",
    "ContractMismatchError",
    "DataFormatError",
    "Interrupted",
    "NeurospeechError",
    "StreamError",
    "StreamLostError",
    "StreamNotFoundError",
    "TransportError",
]


class NeurospeechError(Exception):
    """Base class of every error raised on purpose by neurospeech.

    ``exit_code`` is what the CLI exits with when this error reaches it.
    """

    exit_code: int = 1


class ConfigError(NeurospeechError, ValueError):
    """A setting or command-line value is invalid (names the key, the value and what is allowed)."""

    exit_code = 2


class DataFormatError(NeurospeechError, ValueError):
    """A dataset, events table, recording or array does not follow the documented format."""

    exit_code = 3


class ArtifactError(NeurospeechError):
    """A model, contract or candidate bank is missing, corrupted, or does not belong to its partner."""

    exit_code = 4


class ContractMismatchError(NeurospeechError):
    """A stream (or recording) does not satisfy the model's input contract."""

    exit_code = 5


class StreamError(NeurospeechError):
    """Problems with an LSL stream."""

    exit_code = 6


class StreamNotFoundError(StreamError):
    """No stream matched the query within the timeout."""


class StreamLostError(StreamError):
    """A connected stream stopped delivering samples."""


class TransportError(NeurospeechError):
    """ZeroMQ socket problems (address in use, bad endpoint, key files)."""

    exit_code = 7


class Interrupted(BaseException):
    """A command was stopped by a signal before it finished (raised by the CLI's signal handlers).

    Like :class:`KeyboardInterrupt` it is not an :class:`Exception`, so that no ``except Exception`` on the way
    (a file reader, a clean-up) swallows it. ``exit_code`` is ``128 + signal number`` (the shell's convention:
    130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP); ``serve`` and ``replay`` exit 0 instead (a stop request).
    """

    exit_code = 130

    def __init__(self, signum: int, what: str = "the command") -> None:
        import signal

        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        super().__init__(f"{what} was interrupted by {name}; its output was not written (run it again)")
        self.what = what
        self.signum = int(signum)
        self.exit_code = 128 + int(signum)
