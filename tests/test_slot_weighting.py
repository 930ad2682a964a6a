"""model.slot_weighting: 'slot' trains on a reweighted objective, every masked
slot weighing the same (bltdiff/latent/slot_weighting.py); the bound that
evaluation and the 'bpb' metric report does not change."""

import glob

import jax
import numpy as np
import pytest

from bltdiff import config_checks
from bltdiff.errors import ConfigError
from bltdiff.models import registry
from conftest import tiny_latent_config


def losses(config, tokens, train):
  model = registry.get_model(config)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), {'tokens': tokens})
  loss = jax.jit(lambda p, k: model.loss(p, {'tokens': tokens}, k, train=train))
  return loss(params, jax.random.PRNGKey(1))


def rows(corpus_glob, n=4, length=32):
  text = b' '.join(open(f, 'rb').read() for f in sorted(glob.glob(corpus_glob))[:2])
  return np.frombuffer(text[:n * length], np.uint8).astype(np.int32).reshape(n, length)


@pytest.mark.parametrize('mode, lengths_vary', [('static', False), ('space', True)])
def test_slot_weighting_changes_the_objective_not_the_bound(corpus_glob, mode, lengths_vary):
  tokens = rows(corpus_glob)
  by = {w: tiny_latent_config(corpus_glob, **{'model.slot_weighting': w, 'patching.mode': mode})
        for w in ('byte', 'slot')}
  for train in (True, False):
    (byte_loss, byte_m), (slot_loss, slot_m) = (losses(by[w], tokens, train) for w in by)
    # The reported bound is the same computation under both weightings.
    np.testing.assert_allclose(float(slot_m['bpb']), float(byte_m['bpb']), rtol=1e-6)
    np.testing.assert_allclose(float(byte_loss), float(byte_m['bpb']) * np.log(2), rtol=1e-6)
    if train and lengths_vary:  # reweighted: another objective
      assert abs(float(slot_loss) - float(byte_loss)) > 1e-4 * float(byte_loss)
    else:  # equal lengths (s_i = s̄), or evaluation: the bound itself
      np.testing.assert_allclose(float(slot_loss), float(byte_loss), rtol=1e-5)


def test_unknown_weighting_is_a_one_line_error(corpus_glob):
  config = tiny_latent_config(corpus_glob, **{'model.slot_weighting': 'token'})
  with pytest.raises(ConfigError, match=r"model.slot_weighting: expected one of \('byte', 'slot'\)"):
    config_checks.validate(config)
