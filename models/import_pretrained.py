"""Convert an official LightCNN PyTorch checkpoint into a Gluon checkpoint, without PyTorch.

    python models/import_pretrained.py lightcnn-v4                       # download, verify, convert
    python models/import_pretrained.py LightCNN_29Layers_V2_checkpoint.pth.tar \
        --network lightcnn29v2 --out runs/pretrained/lightcnn29v2
"""
if __name__ == '__main__':  # first, before MXNet loads: it sizes its thread pool once (common/threads.py)
    from common.threads import default_compute_threads
    default_compute_threads()

from common.cli import ArgumentParser, run_cli  # noqa: E402
from models.pretrained import KNOWN_CHECKPOINTS, import_pretrained  # noqa: E402
from symbols import get_model_list  # noqa: E402


def build_parser():
    parser = ArgumentParser(description=__doc__.splitlines()[0], parameters={'source': 'checkpoint'})
    parser.add_argument('checkpoint', help='a .pth/.pth.tar file (zip or legacy format) or a known '
                                           f'name: {", ".join(KNOWN_CHECKPOINTS)}')
    parser.add_argument('--network', choices=get_model_list(),
                        help='architecture of the checkpoint (required for a file)')
    parser.add_argument('--out', help='output stem: writes OUT.params and OUT.json '
                                      '(default for known names: runs/pretrained/NAME)')
    parser.add_argument('--features-only', action='store_true',
                        help='drop the classifier fc2 if the checkpoint has one')
    parser.add_argument('--cache', help='download cache (default $LIGHTCNN_CACHE or runs/cache)')
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    result = import_pretrained(args.checkpoint, args.network, args.out, args.features_only,
                               args.cache)
    classes = result['num_classes'] or 'none (feature net)'
    print(f'imported {result["tensors"]} tensors ({result["format"]} format) into '
          f'{result["network"]}: {result["stem"]}.params + .json; classifier classes: {classes}; '
          f'{result["seconds"]:.1f} s')
    if result['dropped']:
        print(f'dropped on request: {", ".join(result["dropped"])}')


if __name__ == '__main__':
    raise SystemExit(run_cli(main))
