"""Data loading: local JSONL/JSON/parquet files and hub datasets, with errors that name the file,
line and field (``load``)."""

from r1lab.data.load import DataError, check_row, load_qa, looks_local, read_rows, resolve_local

__all__ = ["DataError", "check_row", "load_qa", "looks_local", "read_rows", "resolve_local"]
