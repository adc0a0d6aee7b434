"""Parquet rows read by row group and a few hundred rows at a time, spread over the workers (a Beam source)."""
from __future__ import annotations

from typing import Iterator

import apache_beam as beam
import pyarrow as pa

from . import storage


def row_groups(files: list[str]) -> list[tuple[str, int]]:
    """(file, row group) of every row group of the files: the pieces read in parallel."""
    pieces = []
    for path in files:
        with storage.open_parquet(path) as parquet:
            pieces += [(path, index) for index in range(parquet.metadata.num_row_groups)]
    return pieces


class ReadRowGroup(beam.DoFn):
    """(file, row group) -> its rows as record batches of at most `batch_rows` rows of `columns`."""

    def __init__(self, columns: list[str], batch_rows: int):
        self.columns, self.batch_rows = columns, batch_rows

    def process(self, piece: tuple[str, int]) -> Iterator[pa.RecordBatch]:
        path, index = piece
        with storage.open_parquet(path) as parquet:
            yield from parquet.iter_batches(batch_size=self.batch_rows, row_groups=[index], columns=self.columns)


@beam.ptransform_fn
def ReadParquetBatches(pipeline, files: list[str], columns: list[str], batch_rows: int):  # noqa: N802 (a PTransform)
    """Record batches of the files' rows. Beam's ReadFromParquet would hold a whole row group (as Python rows) per
    worker, however large the files' row groups are."""
    return (pipeline
            | "RowGroups" >> beam.Create(row_groups(files))
            | "SpreadRowGroups" >> beam.Reshuffle()
            | "ReadRowGroups" >> beam.ParDo(ReadRowGroup(columns, batch_rows)).with_output_types(pa.RecordBatch))
