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
