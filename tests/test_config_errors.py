"""Bad config values stop the run with one line that names the field."""

import os
import subprocess
import sys

import pytest

from bltdiff import config_checks, tensorflow_import
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
    ({'train.ema_rate': 1.0}, 'train.ema_rate'),
    ({'data.format': 'sequences'}, 'data.format'),
    ({'data.train_fraction': 0.0}, 'data.train_fraction'),
    ({'data.train_fraction': 1.5}, 'data.train_fraction'),
    ({'data.format': 'pairs', 'data.max_source_share': 1.5}, 'data.max_source_share'),
    ({'data.format': 'pairs', 'data.source_keep': 'middle'}, 'data.source_keep'),
    ({'data.format': 'pairs', 'data.passage_bytes': 0}, 'data.passage_bytes'),
])
def test_bad_value_names_the_field(make_config, overrides, field):
  with pytest.raises(ConfigError) as err:
    config_checks.validate(make_config(**overrides))
  message = str(err.value)
  assert message.startswith(field + ':') and '\n' not in message


@pytest.mark.parametrize('overrides, field', [
    ({'model.dec_order_bias': 2.0}, 'model.dec_order_bias'),  # on the ar decoder
    ({'model.dec_nelbo_draws': 2}, 'model.dec_nelbo_draws'),
    ({'model.dec_two_stream': True}, 'model.dec_two_stream'),
    ({'model.dec_entropy_head': True}, 'model.dec_entropy_head'),
    ({'model.decoder_mode': 'diffusion', 'model.dec_block_queries': True},
     'model.dec_block_queries'),  # without two streams
    ({'model.decoder_mode': 'diffusion', 'model.dec_lookahead': 2}, 'model.dec_lookahead'),
    ({'model.decoder_mode': 'ar', 'model.dec_lookahead': 1}, 'model.dec_lookahead'),
    ({'model.decoder_mode': 'diffusion', 'model.dec_two_stream': True,
      'model.dec_lookahead': -1}, 'model.dec_lookahead'),
    ({'model.decoder_mode': 'diffusion', 'model.dec_nelbo_draws': 0}, 'model.dec_nelbo_draws'),
    ({'sample.intra_patch.speculative': True}, 'sample.intra_patch.speculative'),  # ar decoder
    ({'model.decoder_mode': 'diffusion', 'sample.intra_patch.speculative': True},
     'sample.intra_patch.speculative'),  # one stream
])
def test_bad_decoder_option_names_the_field(make_latent_config, overrides, field):
  with pytest.raises(ConfigError) as err:
    config_checks.validate(make_latent_config(**overrides))
  assert str(err.value).startswith(field + ':') and '\n' not in str(err.value)


def test_pairs_dataset_needs_a_trained_entropy_model(make_latent_config):
  config = make_latent_config(**{'data.format': 'pairs', 'data.source': 'xsum',
                                 'patching.mode': 'entropy', 'data.use_entropies': True})
  with pytest.raises(ConfigError, match=r'^patching\.entropy_model: data\.source=.xsum. is a dataset'):
    config_checks.validate(config)


def test_batch_must_split_over_devices(make_config):
  with pytest.raises(ConfigError, match=r'^train\.batch_size:'):
    config_checks.validate(make_config(**{'train.batch_size': 6}), num_batch_shards=4)


def run_cli(*args, cwd=REPO):
  cmd = [sys.executable, '-m', 'bltdiff.main', *args]
  return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600,
                        env=dict(os.environ, JAX_PLATFORMS='cpu'))


def project_lines(stderr: str) -> list[str]:
  """stderr lines that bltdiff itself writes: its one-line errors, and any
  traceback through its code. Third-party notices (which differ by CPU) are
  not counted here; `test_no_tensorflow_notices` checks those separately."""
  return [l for l in stderr.splitlines()
          if l.startswith('error:') or l.startswith('Traceback') or 'bltdiff' in l]


def test_cli_prints_one_line(tmp_path):
  result = run_cli('--config=configs/demo.py', f'--workdir={tmp_path}',
                   '--config.model.kind=transformer_xl')
  assert result.returncode != 0
  lines = [l for l in result.stderr.splitlines() if l.strip()]
  # The project's error is the last line, and the only line of the project's.
  assert lines and lines[-1].startswith('error: model.kind:'), result.stderr
  assert project_lines(result.stderr) == [lines[-1]], result.stderr
  assert not (tmp_path / 'config.json').exists()


TINY_CONFIG = """
import ml_collections
def get_config():
  return ml_collections.ConfigDict({config!r})
"""


def test_no_tensorflow_notices(tmp_path, make_config):
  """A config error, a short training run and --mode=sample print none of
  TensorFlow's start-up notices (they come through clu's TensorBoard writer)."""
  config_path = tmp_path / 'tiny.py'
  config_path.write_text(TINY_CONFIG.format(config=make_config().to_dict()))
  workdir = tmp_path / 'run'
  runs = [run_cli(f'--config={config_path}', f'--workdir={workdir}', '--config.model.dim=30'),
          run_cli(f'--config={config_path}', f'--workdir={workdir}'),
          run_cli(f'--config={config_path}', f'--workdir={workdir}', '--mode=sample',
                  '--num_samples=1', '--steps=2')]
  assert [r.returncode != 0 for r in runs] == [True, False, False], runs[-1].stderr
  for r in runs:
    notices = [l for l in r.stderr.splitlines()
               if tensorflow_import.is_notice(l) or 'oneDNN' in l or '.cc:' in l]
    assert not notices, r.stderr


def test_import_quietly_drops_notices_and_keeps_the_rest(tmp_path, monkeypatch, capfd):
  (tmp_path / 'noisy_module.py').write_text(
      "import os\n"
      "os.write(2, b'WARNING: All log messages before absl::InitializeLog() is called are "
      "written to STDERR\\n')\n"
      "os.write(2, b'I0000 00:00:1795885934.048070    2398 port.cc:153] oneDNN custom "
      "operations are on.\\n')\n"
      "os.write(2, b'E0000 00:00:1795885934.048070    2398 real.cc:1] a real error\\n')\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  module = tensorflow_import.import_quietly('noisy_module')
  assert module.__name__ == 'noisy_module'
  err = capfd.readouterr().err
  assert 'a real error' in err and 'oneDNN' not in err and 'InitializeLog' not in err
