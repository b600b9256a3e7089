"""The trained model the lesson notebooks load (models/fmnist-mae.pt): it is the file its provenance describes, it loads
with `weights_only=True`, its encoder beats a random one, and `python3 run.py lesson-model` makes one (here a tiny one)."""
import hashlib, json, subprocess, sys
import torch
from conftest import ROOT
from mae_nb.visualize import trained_mae

MODEL = ROOT/'models'/'fmnist-mae.pt'


def test_shipped_model_is_the_one_described():
    made = json.loads(MODEL.with_suffix('.json').read_text())
    assert hashlib.sha256(MODEL.read_bytes()).hexdigest() == made['sha256'], 'the weights changed without their provenance'
    model, prov = trained_mae()
    assert prov == made and not model.training
    assert made['linear_probe'] > made['linear_probe_random_init']
    assert set(torch.load(MODEL, weights_only=True)) == {'config', 'model'}                # weights only: no optimiser state
    recs = [json.loads(l) for l in MODEL.with_name('fmnist-mae-metrics.jsonl').read_text().splitlines()]
    assert recs[-1]['step'] == made['steps']


def test_lesson_model_command_makes_one(tmp_path):
    r = subprocess.run([sys.executable, ROOT/'run.py', 'lesson-model', '--to', tmp_path, '--limit', '256', '--epochs', '1',
                        '--probe-epochs', '1', '--probe-train', '256', '--eval-limit', '256'], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    model, made = trained_mae(tmp_path/'fmnist-mae.pt')
    assert made['command'] == 'python3 run.py lesson-model --limit 256 --epochs 1 --probe-epochs 1 --probe-train 256 --eval-limit 256'
    assert made['steps'] == 2 and made['recipe']['limit'] == 256 and len(made['commit']) == 40
    assert made['sha256'] == hashlib.sha256((tmp_path/'fmnist-mae.pt').read_bytes()).hexdigest()
