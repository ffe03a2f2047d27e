"""Library errors name the library's parameters; command lines spell them as their own options.

``ParameterError(lambda n: f'{n("top_k")} must be >= 1')`` reads ``top_k must be >= 1`` from Python and
``error: --top-k must be >= 1`` from ``predict.py``: :func:`common.cli.run_cli` spells each name with the option
strings of the parser the command parsed (``dest`` -> option, a positional by its name, and
``ArgumentParser(parameters=...)`` for a parameter fed by an option of another name). Per stage, a few
messages are checked both ways, then every library message is checked statically for a ``--flag``.
"""
import ast
import importlib
import inspect
import pickle
import re
from pathlib import Path

import numpy as np
import pytest

from common.cli import ArgumentParser, option_names, run_cli
from common.errors import ParameterError, UsageError, flag
from common.features_mat import write_features
from helpers import load_script, make_tree

ROOT = Path(__file__).resolve().parents[1]


def _library_and_cli(call, script, argv, capsys):
    """``(str of the error call() raises, the error line script prints for argv)``."""
    with pytest.raises(UsageError) as err:
        call()
    assert run_cli(load_script(script).main, [str(a) for a in argv]) == 2
    return str(err.value), capsys.readouterr().err


# --------------------------------------------------------------------------------------------- mechanism
def test_parameter_error_is_a_function_of_the_spelling():
    err = ParameterError(lambda n: f'give {n("val_per_identity")} or {n("val_ratio")}, not both')
    assert isinstance(err, UsageError) and str(err) == 'give val_per_identity or val_ratio, not both'
    assert err.spelled(flag) == 'give --val-per-identity or --val-ratio, not both'
    assert err.spelled(str.upper) == 'give VAL_PER_IDENTITY or VAL_RATIO, not both'
    assert flag('--gpus') == '--gpus'  # a name already spelled as a flag stays as it is
    back = pickle.loads(pickle.dumps(err))  # from a worker process: the library's text, still a UsageError
    assert isinstance(back, ParameterError) and str(back) == str(err) and back.spelled(flag) == str(err)


def test_option_names_come_from_the_parser():
    p = ArgumentParser(parameters={'images_root': 'images', 'out_prefix': 'out'})
    p.add_argument('images', nargs='*')                          # a positional: its name
    p.add_argument('--images', dest='tree', metavar='ROOT')      # an option whose dest differs
    p.add_argument('-k', '--top-k', type=int)                    # the long option wins
    p.add_argument('--out')
    p.add_argument('checkpoint', metavar='CKPT')                 # a positional with a metavar: as --help shows
    names = option_names(p)
    assert names['images'] == 'images' and names['tree'] == '--images' and names['top_k'] == '--top-k'
    assert names['images_root'] == 'images' and names['out_prefix'] == '--out' and names['checkpoint'] == 'CKPT'
    assert 'help' not in names
    bad = ArgumentParser(parameters={'images_root': 'image'})     # a typo in the map fails loudly
    with pytest.raises(KeyError):
        option_names(bad)


def test_run_cli_spells_with_the_parser_main_parsed(capsys):
    def main(argv):
        parser = ArgumentParser(parameters={'images_root': 'images'})
        parser.add_argument('--images')
        parser.add_argument('--top-k', type=int)
        parser.parse_args(argv)
        raise ParameterError(lambda n: f'{n("top_k")} and {n("images_root")}; {n("progress")} is no option')

    assert run_cli(main, []) == 2
    assert capsys.readouterr().err == 'error: --top-k and --images; progress is no option\n'

    def no_parser(argv):
        raise ParameterError(lambda n: f'{n("top_k")} must be >= 1')

    assert run_cli(no_parser, []) == 2  # nothing parsed: the library's names
    assert capsys.readouterr().err == 'error: top_k must be >= 1\n'


# Each command line and the function(s) it calls: every parameter it maps to an option is one they take.
CLI_FUNCTIONS = {
    'data_tools/pack_rec.py': ['data_tools.packing:pack_records'],
    'data_tools/make_pairs.py': ['data_tools.pairs:make_pairs'],
    'extract_features/extract_features.py': ['extract_features.extraction:extract_to_mat'],
    'lfw_verification/lfw_eval.py': ['lfw_verification.evaluate:run_evaluation',
                                     'lfw_verification.bin_eval:run_bin_evaluation',
                                     'lfw_verification.bin_eval:evaluate_bin'],
    'lfw_verification/identify.py': ['identification.cosine:run_identification',
                                     'identification.report:run_classifier_identification'],
    'identification/predict.py': ['identification.predicting:run_prediction'],
    'identification/split_features.py': ['identification.split:split_features'],
    'identification/plot_embeddings.py': ['identification.plots:run_embedding_plots'],
    'models/import_pretrained.py': ['models.pretrained:import_pretrained'],
}


@pytest.mark.parametrize('script', sorted(CLI_FUNCTIONS))
def test_every_mapped_parameter_is_the_called_functions(script):
    parser = load_script(script).build_parser()
    option_names(parser)  # every mapped dest exists
    taken = set()
    for target in CLI_FUNCTIONS[script]:
        module, name = target.split(':')
        taken |= set(inspect.signature(getattr(importlib.import_module(module), name)).parameters)
    assert set(parser.parameters) <= taken, set(parser.parameters) - taken


def test_training_options_are_spelled_as_before():
    """train_lightcnn.py spells through its parser now: every training and demo option as ``flag(name)``."""
    from demo import add_demo_options
    from training import build_parser
    names = option_names(add_demo_options(build_parser()))
    assert names and all(spelled == flag(name) for name, spelled in names.items())


# ------------------------------------------------------------------------------------------- per stage
@pytest.fixture(scope='module')
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp('param') / 'lfw'
    make_tree(root, lfw=True, bad=False)
    return root


@pytest.fixture(scope='module')
def features(tmp_path_factory):
    """8 images of 2 identities (4-D features) and a one-fold pairs file naming them."""
    t = tmp_path_factory.mktemp('feats')
    names = [f'Aaron_Eckhart/Aaron_Eckhart_{i:04d}.png' for i in range(1, 5)] + \
            [f'Zoe_Ball/Zoe_Ball_{i:04d}.png' for i in range(1, 5)]
    write_features(t / 'f.mat', np.random.RandomState(0).rand(8, 4), names)
    (t / 'pairs.txt').write_text('1\t2\nAaron_Eckhart\t1\t2\nZoe_Ball\t1\t2\nAaron_Eckhart\t1\tZoe_Ball\t1\n'
                                 'Aaron_Eckhart\t3\tZoe_Ball\t3\n')
    return t


def test_data_tools(tree, tmp_path, capsys):
    from data_tools.packing import pack_records
    from data_tools.pairs import make_pairs
    lib, cli = _library_and_cli(lambda: pack_records(str(tree), str(tmp_path / 'o'), size=0),
                                'data_tools/pack_rec.py', ['--images', tree, '--out', tmp_path / 'o', '--size', '0'],
                                capsys)
    assert lib == 'size (side of the stored square, pixels) must be >= 16, got 0'
    assert cli == 'error: --size (side of the stored square, pixels) must be >= 16, got 0\n'
    listed = tmp_path / 'l.txt'
    listed.write_text('nowhere/1.jpg 0\n')   # images_root and out_prefix are fed by --images and --out
    lib, cli = _library_and_cli(lambda: pack_records(str(tree), str(tmp_path / 'o'), str(listed), workers=0),
                                'data_tools/pack_rec.py', ['--images', tree, '--list', listed, '--out', tmp_path / 'o',
                                                           '--workers', '0'], capsys)
    assert lib.endswith('; check images_root and strip_prefix') and cli.endswith('; check --images and --strip-prefix\n')
    lib, cli = _library_and_cli(lambda: pack_records(str(tree), str(tmp_path / 'adir') + '/'),
                                'data_tools/pack_rec.py', ['--images', tree, '--out', str(tmp_path / 'adir') + '/'],
                                capsys)
    assert lib.startswith('out_prefix ') and cli.startswith('error: --out ') and 'names a folder' in cli
    lib, cli = _library_and_cli(lambda: make_pairs(str(tree), folds=10, per_fold=1),
                                'data_tools/make_pairs.py', ['--images', tree, '--out', tmp_path / 'p.txt',
                                                             '--folds', '10', '--per-fold', '1'], capsys)
    assert lib.endswith('use folds 1 or fewer') and cli.endswith('use --folds 1 or fewer\n')


def test_extract_features(tree, tmp_path, capsys):
    from extract_features.extraction import extract_to_mat
    from symbols.inference import ImageLoadError
    lib, cli = _library_and_cli(lambda: extract_to_mat('nope', str(tmp_path / 'x.mat'), images=str(tree),
                                                       num_workers=-1),
                                'extract_features/extract_features.py',
                                ['--model', 'nope', '--images', tree, '--out', tmp_path / 'x.mat', '--workers', '-1'],
                                capsys)
    assert lib == 'num_workers must be >= 0, got -1' and cli == 'error: --workers must be >= 0, got -1\n'
    err = ImageLoadError([('a/1.jpg', 'not a decodable image')])
    assert 'pass skip_missing to record' in str(err) and 'pass --skip-missing to record' in err.spelled(flag)


def test_lfw_verification(features, capsys):
    from lfw_verification.evaluate import evaluate_verification
    f, pairs = features / 'f.mat', features / 'pairs.txt'
    lib, cli = _library_and_cli(lambda: evaluate_verification(str(f), str(pairs), pca=2),
                                'lfw_verification/lfw_eval.py', ['--features', f, '--pairs', pairs, '--pca', '2'],
                                capsys)
    assert lib.startswith('pca needs at least 2 folds') and cli.startswith('error: --pca needs at least 2 folds')
    (features / 'missing.txt').write_text('1\t1\nAaron_Eckhart\t1\t9\nAaron_Eckhart\t1\tZoe_Ball\t1\n')
    lib, cli = _library_and_cli(lambda: evaluate_verification(str(f), str(features / 'missing.txt')),
                                'lfw_verification/lfw_eval.py', ['--features', f, '--pairs', features / 'missing.txt'],
                                capsys)
    assert 'or pass skip_missing to score' in lib and 'or pass --skip-missing to score' in cli


def test_identification(features, tmp_path, capsys):
    from identification.cosine import run_identification
    from identification.predicting import run_prediction
    from identification.split import split_features
    f = features / 'f.mat'
    lib, cli = _library_and_cli(lambda: run_identification(str(f)), 'lfw_verification/identify.py',
                                ['--gallery', f], capsys)
    assert lib == 'give either probe_path P.mat or gallery_per_identity K (to split gallery_path by image index)'
    assert cli == 'error: give either --probe P.mat or --gallery-per-identity K (to split --gallery by image index)\n'
    lib, cli = _library_and_cli(lambda: run_prediction('c.joblib', features=str(f), top_k=0),
                                'identification/predict.py', ['--classifier', 'c.joblib', '--features', f,
                                                              '--top-k', '0'], capsys)
    assert lib == 'top_k must be >= 1, got 0' and cli == 'error: --top-k must be >= 1, got 0\n'
    g, p = tmp_path / 'g.mat', tmp_path / 'p.mat'
    lib, cli = _library_and_cli(lambda: split_features(str(f), str(g), str(p), unknown_last=0, probes_per_identity=4),
                                'identification/split_features.py', ['--features', f, '--gallery', g, '--probe', p,
                                                                     '--unknown-last', '0', '--probes-per-identity',
                                                                     '4'], capsys)
    assert lib.endswith('; lower probes_per_identity') and cli.endswith('; lower --probes-per-identity\n')
    names = option_names(load_script('identification/predict.py').build_parser())
    assert names['images'] == 'images' and names['tree'] == '--images'   # the files, and --images ROOT


def test_models(tmp_path, capsys):
    from models.pretrained import import_pretrained
    path = tmp_path / 'm.pth'
    path.write_bytes(b'x')
    lib, cli = _library_and_cli(lambda: import_pretrained(str(path)), 'models/import_pretrained.py', [path], capsys)
    assert lib.startswith('network is required for ') and cli.startswith('error: --network is required for ')
    lib, cli = _library_and_cli(lambda: import_pretrained(str(path), 'lightcnn9'), 'models/import_pretrained.py',
                                [path, '--network', 'lightcnn9'], capsys)
    assert lib == 'out is required for a checkpoint file, e.g. out runs/pretrained/lightcnn9'
    assert cli == 'error: --out is required for a checkpoint file, e.g. --out runs/pretrained/lightcnn9\n'


def test_common_checks_name_what_they_are_given():
    from common.checks import check_number
    from common.devices import parse_device
    with pytest.raises(ParameterError) as err:
        check_number(1.5, 'val_identities', integer=True, qualifier=' (a count when >= 1)')
    assert str(err.value) == 'val_identities (a count when >= 1) must be a whole number, got 1.5'
    assert err.value.spelled(flag).startswith('--val-identities (a count when >= 1) must')
    with pytest.raises(ParameterError) as err:
        parse_device('tpu')
    assert str(err.value).startswith('ctx takes ') and err.value.spelled(flag).startswith('--ctx takes ')


# ----------------------------------------------------------------------------------------- static check
LIBRARY = ['common', 'symbols', 'data_tools', 'training', 'models', 'extract_features', 'identification',
           'lfw_verification', 'demo', 'tools']
FLAG = re.compile(r'(?<![\w.-])--[a-z][a-z0-9-]*')
COMMAND_FLAG = re.compile(r'\b[\w/]+\.py (--[a-z][a-z0-9-]*)')  # "pack_rec.py --val-identities": a command named
CHECKERS = {'check_number', 'check_output_path', 'check_output_prefix', 'parse_device', 'parse_devices'}
ERROR_NAMES = re.compile(r'Error$|Message$|Diverged$')


COMMAND_LINE_PARTS = {'main', 'build_parser'}


def _library_part(tree):
    """The library code of a module: all of it, or in a script that calls ``run_cli`` (a command line, which
    names its own options) every function and class but ``main``, ``build_parser`` and the module level."""
    if not any(isinstance(n, ast.Call) and getattr(n.func, 'id', None) == 'run_cli' for n in ast.walk(tree)):
        return [tree]
    return [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))
            and n.name not in COMMAND_LINE_PARTS]


def _message_nodes(tree):
    """Nodes whose strings become error messages: raise statements, error classes, the names given to checks."""
    for node in (n for part in _library_part(tree) for n in ast.walk(part)):
        if isinstance(node, ast.Raise) and node.exc is not None:
            yield node.exc
        elif isinstance(node, ast.ClassDef) and any(ERROR_NAMES.search(getattr(b, 'id', getattr(b, 'attr', '')))
                                                    for b in node.bases):
            yield from (n for n in node.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)))
        elif isinstance(node, ast.Call) and getattr(node.func, 'id', getattr(node.func, 'attr', None)) in CHECKERS:
            yield from node.args[1:]


def _flags_named(path):
    tree = ast.parse(path.read_text(encoding='utf-8'))
    found = set()
    for node in _message_nodes(tree):
        for const in ast.walk(node):
            if isinstance(const, ast.Constant) and isinstance(const.value, str):
                text = COMMAND_FLAG.sub('', const.value)
                found |= {(const.lineno, f) for f in FLAG.findall(text)}
    return sorted(found)


def test_no_library_message_names_a_flag():
    offences = []
    for package in LIBRARY:
        for path in sorted((ROOT / package).rglob('*.py')):
            rel = path.relative_to(ROOT).as_posix()
            offences += [f'{rel}:{line}: {name}' for line, name in _flags_named(path)]
    assert not offences, ('library messages name command-line flags; name the parameter with '
                          'ParameterError(lambda n: f\'{n("param")} ...\'):\n' + '\n'.join(offences))


def test_the_static_check_can_fail(tmp_path):
    bad = tmp_path / 'bad.py'
    bad.write_text("def f(k):\n    if k < 1:\n        raise UsageError(f'--top-k must be >= 1, got {k}')\n"
                   "    check_number(k, '--top-k')\n"
                   "    raise UsageError('not written by identify.py --save-classifier')\n")
    assert _flags_named(bad) == [(3, '--top-k'), (4, '--top-k')]


def _lambdas_using_the_exception(path):
    """``except E as err: raise ParameterError(lambda n: f'... {err}')``: the message is rendered after the
    ``except`` block has unbound ``err`` (NameError instead of the error line)."""
    tree = ast.parse(path.read_text(encoding='utf-8'))
    return [(lam.lineno, handler.name) for handler in ast.walk(tree)
            if isinstance(handler, ast.ExceptHandler) and handler.name
            for lam in ast.walk(handler) if isinstance(lam, ast.Lambda)
            and handler.name in {x.id for x in ast.walk(lam.body) if isinstance(x, ast.Name)}]


def test_no_message_renders_an_unbound_exception(tmp_path):
    bad = tmp_path / 'bad.py'
    bad.write_text("try:\n    f()\nexcept OSError as err:\n    raise ParameterError(lambda n: f'{n(\"x\")}: {err}')\n")
    assert _lambdas_using_the_exception(bad) == [(4, 'err')]  # the check can fail
    offences = [f'{path.relative_to(ROOT)}:{line}: {name}' for package in LIBRARY
                for path in sorted((ROOT / package).rglob('*.py')) for line, name in _lambdas_using_the_exception(path)]
    assert not offences, 'copy the exception text before the lambda:\n' + '\n'.join(offences)
