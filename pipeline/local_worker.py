"""A worker process of the local runner: our logging set up before Beam is imported, then Beam's SDK harness."""
import signal
import sys

from webtext.pipeline.logs import setup_worker_logging
from webtext.pipeline.memory import configure_process

if __name__ == "__main__":
    configure_process()  # before Beam's threads start
    # Ctrl-C reaches the whole process group: the stage that started this worker cancels its job, which ends it
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    setup_worker_logging()
    from apache_beam.runners.worker import sdk_worker_main

    sdk_worker_main.main(sys.argv)
