"""Data preparation: pack face datasets into RecordIO, make and read verification pairs and insightface .bin sets,
read records."""
from .bin_sets import load_bin, make_bin, write_bin
from .packing import pack_records
from .pairs import Pair, make_pairs, pairs_report, read_pairs, write_pairs
from .records import iter_records, summarize_records

__all__ = ['Pair', 'iter_records', 'load_bin', 'make_bin', 'make_pairs', 'pack_records', 'pairs_report',
           'read_pairs', 'summarize_records', 'write_bin', 'write_pairs']
