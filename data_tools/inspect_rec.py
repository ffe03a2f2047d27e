"""Summarise a RecordIO file (ours, im2rec's or insightface's): counts, images per class, image size and mode.

Example: ``python data_tools/inspect_rec.py data/casia.rec --sheet casia_sheet.png``
"""
if __name__ == '__main__':  # first, before MXNet loads: it sizes its thread pool once (common/threads.py)
    from common.threads import default_compute_threads
    default_compute_threads()

import json  # noqa: E402
import os  # noqa: E402

from common.cli import ArgumentParser, run_cli  # noqa: E402
from data_tools.records import (check_sheet_count, check_sheet_output, contact_sheet, format_summary,  # noqa: E402
                                index_path, scan_records, summarize_records)


def main(argv=None):
    parser = ArgumentParser(description=__doc__.splitlines()[0], parameters={'rec_path': 'rec', 'out_png': 'sheet'})
    parser.add_argument('rec', help='the .rec file (its .idx, .lst and PREFIX.json beside it are checked against '
                                    'it when present)')
    parser.add_argument('--sheet', metavar='PNG', help='also save a contact sheet of records spread over the file')
    parser.add_argument('--count', type=int, default=32, help='records on the contact sheet (default 32, 1..1024)')
    parser.add_argument('--json', action='store_true', help='print the summary as JSON')
    args = parser.parse_args(argv)
    check_sheet_count(args.count)
    if args.sheet:
        check_sheet_output(args.rec, args.sheet)  # before any work: format, not an input, folder
    idx = index_path(args.rec)
    if os.path.isfile(idx):
        scan_records(args.rec, idx)  # the .idx, .lst and PREFIX.json must describe this .rec
    summary = summarize_records(args.rec, idx if os.path.isfile(idx) else None)
    sheet = contact_sheet(args.rec, args.sheet, args.count) if args.sheet else None  # files first, then print
    print(json.dumps(summary, indent=1) if args.json else format_summary(summary))
    if sheet:
        print(f'contact sheet: {sheet}')


if __name__ == '__main__':
    raise SystemExit(run_cli(main))
