"""The commands added for classifiers, plots and .bin sets follow the house CLI rules (run from the root,
--help works, misuse is one line and exit 2) -- the same check as tests/test_common.py."""
import pytest

from test_common import test_every_script_runs_from_the_root_and_misuse_is_exit_2 as check_script


@pytest.mark.parametrize('script', ['data_tools/make_bin.py', 'identification/plot_embeddings.py',
                                    'identification/predict.py', 'identification/split_features.py'])
def test_script_conventions(repo_root, tmp_path, script):
    check_script(repo_root, tmp_path, script)
