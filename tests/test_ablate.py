"Every ablation variant runs end to end (pretraining, probe, kNN, fine-tuning) in its one-step smoke version."
import json, os, subprocess, sys
from pathlib import Path
from mae_nb.cli import ABLATIONS

MAE_NB = Path(sys.executable).parent/'mae_nb'


def test_every_variant_smoke(tmp_path):
    r = subprocess.run([MAE_NB, 'ablate', 'all', '--smoke', '--device', 'cpu', '--out', tmp_path/'json', '--work', tmp_path/'work'],
                       capture_output=True, text=True, env={**os.environ, 'MPLBACKEND': 'Agg'})
    assert r.returncode == 0, r.stderr[-2000:]
    results = {p.name: json.loads(p.read_text()) for p in (tmp_path/'json').glob('*.json')}
    assert sorted(results) == sorted(f'{v}-seed0-smoke.json' for v in ABLATIONS)
    for name, res in results.items():
        assert 0 <= res['linear_probe'] <= 100 and 0 <= res['knn'] <= 100 and 0 <= res['finetune'] <= 100, name
        assert res['command'].startswith(f"mae_nb ablate {res['variant']} --seeds 0 --smoke")
        assert (res['pretrain_s'] is None) == (res['variant'] == 'random_init')
    assert results['encoder_mask_tokens-seed0-smoke.json']['config']['encoder_mask_tokens'] is True
