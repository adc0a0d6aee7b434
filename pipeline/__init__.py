"""Beam pipelines, run directory and the `webtext` command line that compose crawl/ and dedup/."""
