"""Data preparation: pack face datasets into RecordIO, make and read verification pairs, read records."""
from .packing import pack_records
from .pairs import Pair, make_pairs, read_pairs, write_pairs
from .records import iter_records, summarize_records

__all__ = ['Pair', 'iter_records', 'make_pairs', 'pack_records', 'read_pairs', 'summarize_records',
           'write_pairs']
