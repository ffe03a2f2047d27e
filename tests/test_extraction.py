"""Feature extraction: engine == direct forward, batching and flip semantics, list paths, .mat layout."""
import json
import os
import subprocess
import sys

import cv2
import mxnet as mx
import numpy as np
import pytest
import scipy.io

from common.preprocessing import Preprocessing
from extract_features.extraction import extract_to_mat
from helpers import PRE, make_checkpoint, make_tree
from symbols.checkpoint import load_checkpoint
from symbols.inference import (Embedder, ImageItem, ImageLoadError, embed_images, inference_backend,
                               items_from_list, items_from_tree, resolve_list_path)

@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('extract')
    stem = make_checkpoint(tmp)
    root = tmp / 'lfw_patch'
    labels = make_tree(root, lfw=True)
    net, meta = load_checkpoint(stem, features_only=True)
    return dict(tmp=tmp, stem=stem, root=root, labels=labels, net=net, pre=meta['preprocessing'])


def direct_features(setup, labels, flip=False, center_crop=None):
    """The reference: a plain un-hybridized forward of ``Preprocessing.to_batch`` images."""
    net, _ = load_checkpoint(setup['stem'], features_only=True)
    imgs = [setup['pre'].load(str(setup['root'] / rel), center_crop) for rel in labels]
    out = net(mx.nd.array(setup['pre'].to_batch(imgs))).asnumpy()
    if flip:
        out = out + net(mx.nd.array(setup['pre'].to_batch([i[:, ::-1] for i in imgs]))).asnumpy()
    return out


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def assert_same_features(a, b):
    """Equal up to float32 rounding: raw values relative to the feature scale (random-init
    features reach ~100) and L2-normalised features (what verification uses) within 1e-5."""
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6 * np.abs(b).max())
    np.testing.assert_allclose(unit(a), unit(b), rtol=0, atol=1e-5)


def run_engine(setup, labels, batch_size, flip=False, workers=2, **kw):
    emb = Embedder(setup['net'], setup['pre'], batch_size=batch_size)
    items = [ImageItem(rel, str(setup['root'] / rel)) for rel in labels]
    return embed_images(emb, items, flip=flip, num_workers=workers, **kw)


def test_features_equal_direct_forward_and_are_batch_independent(setup):
    labels = setup['labels']
    ref = direct_features(setup, labels)
    one = run_engine(setup, labels, batch_size=1, workers=0)
    seven = run_engine(setup, labels, batch_size=7)  # 8 images: one full batch + one padded
    assert one.features.shape == (len(labels), 256) and one.features.dtype == np.float32
    assert one.labels == labels == seven.labels
    assert_same_features(seven.features, ref)
    assert_same_features(one.features, seven.features)
    assert np.abs(ref).max() > 1e-3  # not a degenerate all-zero net


def test_cpu_engine_runs_the_onednn_fused_graph(setup):
    """The CPU engine partitions the graph for oneDNN (MFM's relu and add become conv post-ops); same features."""
    if inference_backend(mx.cpu()) is None:
        pytest.skip('this MXNet build has no oneDNN (MKLDNN) for the subgraph pass')
    net, _ = load_checkpoint(setup['stem'], features_only=True)  # fresh, not hybridized
    imgs = [setup['pre'].load(str(setup['root'] / rel)) for rel in setup['labels']]
    ref = net(mx.nd.array(setup['pre'].to_batch(imgs))).asnumpy()
    got, _ = Embedder(net, setup['pre'], batch_size=len(imgs)).forward(imgs)
    ops = {node['op'] for node in json.loads(net._cached_graph[1].tojson())['nodes']}
    assert '_sg_mkldnn_conv' in ops and 'Convolution' not in ops
    assert_same_features(got, ref)


def test_flip_adds_the_mirrored_feature(setup):
    labels = setup['labels'][:5]
    got = run_engine(setup, labels, batch_size=3, flip=True).features
    assert_same_features(got, direct_features(setup, labels, flip=True))
    assert not np.allclose(got, 2 * direct_features(setup, labels), atol=1e-4)


def test_center_crop_comes_from_preprocessing(setup):
    labels = setup['labels'][:3]
    got = run_engine(setup, labels, batch_size=4, center_crop=20).features
    assert_same_features(got, direct_features(setup, labels, center_crop=20))


@pytest.mark.parametrize('line', ['/lfw_patch/Aaron_Eckhart/Aaron_Eckhart_0002.png',
                                  'Aaron_Eckhart/Aaron_Eckhart_0002.png',
                                  'lfw_patch/Aaron_Eckhart/Aaron_Eckhart_0002.png',
                                  '/home/someone/data/lfw_patch/Aaron_Eckhart/Aaron_Eckhart_0002.png'])
def test_list_lines_resolve_to_relative_label(setup, line):
    label, path = resolve_list_path(line, str(setup['root']))
    assert label == 'Aaron_Eckhart/Aaron_Eckhart_0002.png'
    assert os.path.samefile(path, setup['root'] / label)


def test_list_relative_to_parent_root_keeps_first_component(setup):
    label, path = resolve_list_path('/lfw_patch/Zoe_Ball/Zoe_Ball_0001.png', str(setup['tmp']))
    assert label == 'lfw_patch/Zoe_Ball/Zoe_Ball_0001.png' and os.path.isfile(path)


def test_list_file_with_label_column_comments_and_missing(setup, tmp_path):
    lst = tmp_path / 'list.txt'
    lst.write_text('# lfw list\n/lfw_patch/Zoe_Ball/Zoe_Ball_0003.png 7\n\n'
                   'Aaron_Eckhart/Aaron_Eckhart_0001.png\n/lfw_patch/Nobody/Nobody_0001.jpg\n')
    items = items_from_list(str(lst), str(setup['root']))
    assert [i.label for i in items] == ['Zoe_Ball/Zoe_Ball_0003.png',
                                        'Aaron_Eckhart/Aaron_Eckhart_0001.png',
                                        'Nobody/Nobody_0001.jpg']
    assert items[2].source is None and os.path.isfile(items[0].source)


def test_tree_is_sorted_recursive_and_includes_pgm(tmp_path):
    (tmp_path / 'b' / 'deep').mkdir(parents=True)
    (tmp_path / 'a').mkdir()
    img = np.full((8, 8), 128, np.uint8)
    for rel in ['b/deep/2.pgm', 'a/1.PNG', 'b/1.jpg']:
        cv2.imwrite(str(tmp_path / rel), img)
    (tmp_path / 'a' / 'notes.txt').write_text('x')
    assert [i.label for i in items_from_tree(str(tmp_path))] == ['a/1.PNG', 'b/1.jpg', 'b/deep/2.pgm']


def test_missing_images_stop_before_writing(setup, tmp_path):
    out = tmp_path / 'feats.mat'
    with pytest.raises(ImageLoadError) as err:
        extract_to_mat(setup['stem'], str(out), images=str(setup['root']), batch_size=4,
                       progress=False)
    assert not out.exists()
    assert err.value.failures == [('Zoe_Ball/Zoe_Ball_9999.jpg', err.value.failures[0][1])]
    assert '1 image(s)' in str(err.value) and 'Zoe_Ball_9999.jpg' in str(err.value)
    assert 'Zoe_Ball/Zoe_Ball_9999.jpg' in (tmp_path / 'feats.failed.txt').read_text()


def test_skip_missing_records_them_and_mat_layout_round_trips(setup, tmp_path):
    out, npy, csv = tmp_path / 'feats.mat', tmp_path / 'f.npy', tmp_path / 'f.csv'
    res = extract_to_mat(setup['stem'], str(out), images=str(setup['root']), batch_size=5,
                         skip_missing=True, npy=str(npy), csv=str(csv), progress=False)
    assert [s[0] for s in res.skipped] == ['Zoe_Ball/Zoe_Ball_9999.jpg']
    mat = scipy.io.loadmat(str(out))
    assert mat['data'].dtype == np.float32 and mat['data'].shape == (len(setup['labels']), 256)
    assert mat['label'].shape == (len(setup['labels']), 1) and mat['label'].dtype == object
    assert [c[0] for c in mat['label'][:, 0]] == setup['labels']
    assert mat['skipped'].shape == (1, 1) and mat['skipped'][0, 0][0] == 'Zoe_Ball/Zoe_Ball_9999.jpg'
    assert_same_features(mat['data'], direct_features(setup, setup['labels']))
    np.testing.assert_array_equal(np.load(npy), mat['data'])
    assert csv.read_text().splitlines()[1].startswith('0,Aaron_Eckhart/Aaron_Eckhart_0001.png,')
    assert not [p for p in os.listdir(tmp_path) if '.tmp' in p]


def test_mat_loads_in_octave(setup, tmp_path):
    octave = __import__('shutil').which('octave')
    if not octave:
        pytest.skip('octave is not installed')
    out = tmp_path / 'f.mat'
    extract_to_mat(setup['stem'], str(out), images=str(setup['root']), skip_missing=True,
                   progress=False)
    script = (f"load('{out}'); printf('%s|%d|%d|%d|%d|%s\\n', class(data), size(data,1), size(data,2),"
              " iscell(label), size(label,2), label{3});")
    res = subprocess.run([octave, '--no-gui', '--quiet', '--eval', script], capture_output=True,
                         text=True, timeout=120)
    assert res.stdout.strip().splitlines()[-1] == f'single|8|256|1|1|{setup["labels"][2]}'


def test_cli_exit_codes(setup, tmp_path, capsys, monkeypatch):
    """In-process through run_cli (the script's own entry), as the shell would see it."""
    from common.cli import run_cli
    from extract_features.extract_features import main
    monkeypatch.chdir(tmp_path)
    base = ['--model', setup['stem'], '--quiet']
    assert run_cli(main, base + ['--images', str(setup['root']), '--out', 'a.mat']) == 2
    assert capsys.readouterr().err.startswith('error: 1 image(s) missing or unreadable')
    assert not (tmp_path / 'a.mat').exists() and (tmp_path / 'a.failed.txt').exists()
    assert run_cli(main, ['--model', 'nope', '--images', str(setup['root'])]) == 2
    assert 'no checkpoint' in capsys.readouterr().err
    assert run_cli(main, base + ['--img-list', 'missing.txt']) == 2
    assert 'cannot read image list' in capsys.readouterr().err
    with pytest.raises(SystemExit) as both:
        run_cli(main, base + ['--images', 'x', '--pairs', 'y'])
    assert both.value.code == 2 and 'not allowed with' in capsys.readouterr().err


def test_cli_script_runs_from_any_directory(setup, tmp_path):
    lst = tmp_path / 'l.txt'
    lst.write_text('/lfw_patch/Aaron_Eckhart/Aaron_Eckhart_0001.png\n')
    script = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'extract_features',
                          'extract_features.py')
    ok = subprocess.run([sys.executable, script, '--model', setup['stem'], '--img-list', str(lst),
                         '--root', str(setup['root']), '--out', 'b.mat', '--flip', '--batch-size', '3'],
                        capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert 'wrote b.mat: 1 x 256 features' in ok.stdout
    mat = scipy.io.loadmat(str(tmp_path / 'b.mat'))
    assert mat['label'][0, 0][0] == 'Aaron_Eckhart/Aaron_Eckhart_0001.png'
    assert mat['data'].shape == (1, 256)


def test_pairs_list_is_deduplicated_in_order(setup, monkeypatch):
    """Uses a stand-in ``read_pairs`` (the real parser is tested with data_tools)."""
    from symbols import inference
    a, b, c = setup['labels'][0], setup['labels'][1], setup['labels'][5]
    monkeypatch.setattr(inference, 'read_pairs',
                        lambda path: [(a, b, True, 0), (b, c, False, 0), (c, 'X/X_0001.jpg', False, 1)])
    items_from_pairs = inference.items_from_pairs
    items = items_from_pairs('pairs.txt', str(setup['root']))
    assert [i.label for i in items] == [a, b, c, 'X/X_0001.jpg']
    assert [i.source is None for i in items] == [False, False, False, True]


def test_align_hook_runs_before_fit_and_none_is_a_failure(setup):
    labels = setup['labels'][:3]
    seen = []

    def align(img):  # receives the decoded BGR image at file size; returns a crop or None
        seen.append(img.shape)
        return None if len(seen) == 2 else img[5:35, 5:35]
    res = run_engine(setup, labels, batch_size=4, workers=0, align=align, skip_missing=True)
    assert seen == [(40, 46, 3)] * 3
    assert res.labels == [labels[0], labels[2]] and res.skipped[0][0] == labels[1]
    pre, net = setup['pre'], load_checkpoint(setup['stem'], features_only=True)[0]
    crops = [pre.decoded(cv2.imread(str(setup['root'] / rel))[5:35, 5:35]) for rel in labels[::2]]
    assert_same_features(res.features, net(mx.nd.array(pre.to_batch(crops))).asnumpy())


def test_ctx_parsing():
    from common.errors import UsageError
    from common.devices import parse_device as parse_ctx
    assert parse_ctx('cpu') == mx.cpu()
    with pytest.raises(UsageError):
        parse_ctx('tpu:0')
    if mx.context.num_gpus() == 0:
        with pytest.raises(UsageError, match='GPU'):
            parse_ctx('gpu:0')


def test_pairs_with_real_reader(setup, tmp_path):
    pytest.importorskip('data_tools.pairs')
    from symbols.inference import items_from_pairs
    a, b, c = setup['labels'][0], setup['labels'][1], setup['labels'][4]
    pairs = tmp_path / 'pair.label'
    pairs.write_text(f'1 {a} {b}\n0 {a} {c}\n')
    items = items_from_pairs(str(pairs), str(setup['root']))
    assert [i.label for i in items] == [a, b, c] and all(os.path.isfile(i.source) for i in items)
