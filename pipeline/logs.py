"""Our log output, configured explicitly for the CLI and the local runner's workers, so that it is the same whether
or not Beam's gcp extra is installed (without it, Beam's import-time warning used to configure the root logger)."""
from __future__ import annotations

import logging
import re
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Shown at the chosen level: ours, and what the Dataflow runner says about staging and the job (its console link).
# Every other logger (Beam's local runner, type hints, workers' set-up) shows warnings only.
OUR_LOGGERS = ("webtext", "apache_beam.runners.dataflow", "apache_beam.runners.portability.stager")


class QuietBeamImports(logging.Filter):
    """Drops Beam's import-time notes about a missing optional client or file system (without the gcp extra): nothing
    about a run, and a RUN on that file system is refused saying what to install (storage.check_filesystem)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("apitools not found")
                    or (message.startswith("Failed to import ") and "loading of this filesystem" in message))


class QuietUserErrors(logging.Filter):
    """Drops Beam's traceback of a DoFn that raised a StageError (a full disk, a bad input file): the command prints
    that error as its one line when the job fails."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is not None:
            return not any(cls.__name__ == "StageError" for cls in type(error).__mro__)
        return not USER_ERROR_IN_WORKER_LOG.search(record.getMessage())


# A worker's log record (sent back to the local runner as text) of a bundle that failed with a StageError.
USER_ERROR_IN_WORKER_LOG = re.compile(r"\bwebtext\.pipeline\.storage\.(?:StageError|DiskError): ")


class WorkerStderr:
    """A local worker's stderr without the traceback that Beam's harness prints of a bundle failed by a StageError
    (the runner hands that error to the command, which prints it as one line)."""

    def __init__(self, stream):
        self.stream = stream
        self._dropped = False

    def write(self, text: str) -> int:
        if text.startswith("Traceback") and USER_ERROR_IN_WORKER_LOG.search(text):
            self._dropped = True
            return len(text)
        if self._dropped and text == "\n":  # print()'s end of the dropped traceback
            self._dropped = False
            return len(text)
        self._dropped = False
        return self.stream.write(text)

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


def _stderr_handler() -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(QuietBeamImports())
    return handler


def quiet_beam_imports() -> None:
    """Before Beam is imported: its import-time notes are dropped (the loggers that log them filter them)."""
    for name in ("", "apache_beam.io.filesystems"):
        logging.getLogger(name).addFilter(QuietBeamImports())
    for name in ("apache_beam.runners.common", "apache_beam.runners.worker.sdk_worker",
                 "apache_beam.runners.portability.local_job_service"):
        logging.getLogger(name).addFilter(QuietUserErrors())


def setup_logging(level: str = "INFO") -> None:
    """One stderr handler on the root logger (replacing any that an import installed) showing warnings, and
    OUR_LOGGERS at `level`."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(_stderr_handler())
    root.setLevel(logging.WARNING)
    for name in OUR_LOGGERS:
        logging.getLogger(name).setLevel(getattr(logging, level.upper(), logging.INFO))


def setup_worker_logging() -> None:
    """In a local worker process, before Beam is imported: our records go straight to stderr in our format (their
    level comes with the pipeline options); Beam's go only to the runner, which shows its warnings."""
    sys.stderr = WorkerStderr(sys.stderr)
    root = logging.getLogger()
    root.addHandler(logging.NullHandler())  # so that an import-time logging.warning() configures nothing
    quiet_beam_imports()
    ours = logging.getLogger("webtext")
    ours.addHandler(_stderr_handler())
    ours.propagate = False
