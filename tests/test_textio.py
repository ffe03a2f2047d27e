"""One reader for every text input: a UTF-8 BOM and CRLF/CR line ends read like the plain file."""
import pytest

from common.errors import UsageError
from common.textio import check_line_field, read_lines


@pytest.mark.parametrize('bom', [b'', b'\xef\xbb\xbf'])
@pytest.mark.parametrize('eol', [b'\n', b'\r\n', b'\r'])
def test_bom_and_line_ends_are_normalised(tmp_path, bom, eol):
    path = tmp_path / 'list.txt'
    path.write_bytes(bom + eol.join(['id0/1.jpg 0'.encode(), 'Zoë/2.jpg\t1'.encode(), b'']) + eol)
    assert read_lines(path) == [(1, 'id0/1.jpg 0'), (2, 'Zoë/2.jpg\t1'), (3, '')]


def test_errors_name_the_file_and_line(tmp_path):
    path = tmp_path / 'pairs.txt'
    path.write_bytes(b'10\t300\nAbel\t1\t2\nbad\xff\n')
    with pytest.raises(UsageError, match=r'pairs file .*pairs.txt, line 3: not UTF-8'):
        read_lines(path, 'pairs file')
    with pytest.raises(UsageError, match='not found'):
        read_lines(tmp_path / 'missing.txt')
    with pytest.raises(UsageError, match='is a directory'):
        read_lines(tmp_path)


def test_fields_with_tabs_or_newlines_are_refused():
    assert check_line_field('a b/c.jpg') == 'a b/c.jpg'
    for bad in ('a\tb.jpg', 'a\nb.jpg', 'a\rb.jpg'):
        with pytest.raises(UsageError, match='tab or line break'):
            check_line_field(bad, 'image path')


# ------------------------------------------------------------------ every reader of user text goes through it

BOM, CRLF = b'\xef\xbb\xbf', b'\r\n'


def _saved_like_notepad(path, text):
    """``text`` as Windows Notepad's "UTF-8" saves it: a byte-order mark and CRLF line ends."""
    path.write_bytes(BOM + text.replace('\n', '\r\n').encode('utf-8'))
    return str(path)


def _plain(path, text):
    path.write_bytes(text.encode('utf-8'))
    return str(path)


@pytest.mark.parametrize('text', ['Zoë/1.jpg 0\nZoë/2.jpg 0\nbob/1.jpg 3\n',          # MS-Celeb "path label"
                                  '0\t0.000000\tZoë/1.jpg\n1\t0\tZoë/2.jpg\n2\t3\tbob/1.jpg\n'])  # im2rec .lst
def test_packing_list_reads_alike_with_bom_and_crlf(tmp_path, text):
    from data_tools.packing import read_list
    plain = read_list(_plain(tmp_path / 'plain.txt', text))
    assert plain == [('Zoë/1.jpg', 0), ('Zoë/2.jpg', 0), ('bob/1.jpg', 3)]
    assert read_list(_saved_like_notepad(tmp_path / 'bom.txt', text)) == plain


def test_pairs_and_identity_files_read_alike_with_bom_and_crlf(tmp_path):
    from data_tools.pairs import identities_from, read_pairs
    text = '1\t1\nAnn\t1\t2\nAnn\t1\tBob\t1\n'
    plain = read_pairs(_plain(tmp_path / 'p.txt', text))
    assert [p.path1 for p in plain] == ['Ann/Ann_0001.jpg', 'Ann/Ann_0001.jpg'] and plain[1].path2 == 'Bob/Bob_0001.jpg'
    assert read_pairs(_saved_like_notepad(tmp_path / 'bom.txt', text)) == plain
    assert identities_from(_saved_like_notepad(tmp_path / 'ids.txt', 'Ann\nBob\n')) == ['Ann', 'Bob']


def test_image_list_reads_alike_with_bom_and_crlf(tmp_path):
    from symbols.inference import items_from_list
    (tmp_path / 'Ann').mkdir()
    for name in ('Ann_0001.jpg', 'Ann_0002.jpg'):
        (tmp_path / 'Ann' / name).write_bytes(b'x')
    text = 'Ann/Ann_0001.jpg\nAnn/Ann_0002.jpg 4\n'
    plain = items_from_list(_plain(tmp_path / 'l.txt', text), str(tmp_path))
    bom = items_from_list(_saved_like_notepad(tmp_path / 'b.txt', text), str(tmp_path))
    assert [(i.label, i.source) for i in bom] == [(i.label, i.source) for i in plain]
    assert [i.label for i in bom] == ['Ann/Ann_0001.jpg', 'Ann/Ann_0002.jpg'] and all(i.source for i in bom)


def test_packing_json_with_a_bom_is_read(tmp_path):
    from data_tools.dataset_info import read_dataset_info
    path = tmp_path / 'd.json'
    path.write_bytes(BOM + b'{"num_classes": 3}')
    assert read_dataset_info(str(path)) == {'num_classes': 3}


def test_non_utf8_names_are_refused_by_line_writers():
    name = b'b\xffob/1.jpg'.decode('utf-8', 'surrogateescape')  # as os.listdir returns it
    with pytest.raises(UsageError, match=r"'b\\xffob/1.jpg' is not valid UTF-8"):
        check_line_field(name, 'image path')


def test_list_path_with_a_tab_is_refused_with_its_line(tmp_path):
    from data_tools.packing import read_list
    lst = tmp_path / 'l.txt'
    lst.write_text('a/1.jpg 0\na\tb/2.jpg 1\n', encoding='utf-8')
    with pytest.raises(UsageError, match=r':2: path .* tab or line break'):
        read_list(str(lst))


def test_pairs_writer_refuses_names_with_a_tab(tmp_path):
    from data_tools.pairs import Pair, write_pairs
    pairs = [Pair('A\tx/1.jpg', 'A\tx/2.jpg', True, 0), Pair('A\tx/1.jpg', 'B/1.jpg', False, 0)]
    with pytest.raises(UsageError, match='tab or line break'):
        write_pairs(str(tmp_path / 'p.txt'), pairs, 1, 1)
    assert not list(tmp_path.iterdir())
