"""A worker process of the local runner: our logging set up before Beam is imported, then Beam's SDK harness."""
import sys

from webtext.pipeline.logs import setup_worker_logging

if __name__ == "__main__":
    setup_worker_logging()
    from apache_beam.runners.worker import sdk_worker_main

    sdk_worker_main.main(sys.argv)
