"""Bad config values stop the run with one line that names the field."""

import os
import subprocess
import sys

import pytest

from bltdiff import config_checks
from bltdiff.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize('overrides, field', [
    ({'model.kind': 'transformer_xl'}, 'model.kind'),
    ({'train.num_steps': -5}, 'train.num_steps'),
    ({'data.seq_len': 32, 'sample.block_length': 12}, 'data.seq_len'),
    ({'model.dim': 30, 'model.num_heads': 4}, 'model.dim'),
    ({'train.batch_size': 0}, 'train.batch_size'),
    ({'model.schedule': 'quadratic'}, 'model.schedule'),
    ({'sample.top_p': 1.5}, 'sample.top_p'),
])
def test_bad_value_names_the_field(make_config, overrides, field):
  with pytest.raises(ConfigError) as err:
    config_checks.validate(make_config(**overrides))
  message = str(err.value)
  assert message.startswith(field + ':') and '\n' not in message


def test_batch_must_split_over_devices(make_config):
  with pytest.raises(ConfigError, match=r'^train\.batch_size:'):
    config_checks.validate(make_config(**{'train.batch_size': 6}), num_batch_shards=4)


def test_cli_prints_one_line(tmp_path):
  cmd = [sys.executable, '-m', 'bltdiff.main', '--config=configs/demo.py',
         f'--workdir={tmp_path}', '--config.model.kind=transformer_xl']
  result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert result.returncode != 0
  lines = [l for l in result.stderr.splitlines() if l.strip()]
  assert lines == [lines[-1]] and lines[-1].startswith('error: model.kind:'), result.stderr
