"`mae_nb finetune --tune-blocks`: only the last blocks learn; the frozen ones leave the run bit-identical."
import json, os, subprocess, sys
from pathlib import Path
import torch
from conftest import call

MAE_NB = Path(sys.executable).parent/'mae_nb'
ENV = {**os.environ, 'MPLBACKEND': 'Agg'}


def run(*args):
    return subprocess.run([MAE_NB, *map(str, args)], capture_output=True, text=True, env=ENV)


def test_tune_last_block_only(tmp_path):
    r = run('pretrain', '--limit', '128', '--batch-size', '64', '--epochs', '1', '--no-progress', '--out', tmp_path/'pre')
    assert r.returncode == 0, r.stderr
    ft = ('finetune', '--checkpoint', tmp_path/'pre'/'checkpoint.pt', '--limit', '128', '--batch-size', '64', '--eval-limit', '128',
          '--no-progress', '--out', tmp_path/'ft')
    r = run(*ft, '--epochs', '1', '--tune-blocks', '1')
    assert r.returncode == 0, r.stderr
    pre = torch.load(tmp_path/'pre'/'checkpoint.pt', weights_only=True)
    clf = torch.load(tmp_path/'ft'/'checkpoint.pt', weights_only=True)
    last = f"blocks.{pre['config']['depth'] - 1}."
    shared = [k for k in clf['model'] if k in pre['model']]
    assert 'patch_embed.proj.weight' in shared and any(k.startswith(last) for k in shared)
    moved = [k for k in shared if not torch.equal(clf['model'][k], pre['model'][k])]
    assert moved == [k for k in shared if k.startswith(last)], moved        # the last block learned, all else is bit-identical
    assert clf['train_config']['tune_blocks'] == '1'
    code, _, err = call([*ft, '--epochs', '2', '--tune-blocks', '2', '--resume'])   # another part to tune is another run
    assert code == 1 and '--tune-blocks' in err and 'resume' in err, err
    code, _, err = call([*ft[:-1], tmp_path/'ft9', '--epochs', '1', '--tune-blocks', '9'])
    assert code == 1 and "--tune-blocks 9: must be 0–6" in err and len(err.strip().splitlines()) == 1, err
    code, _, err = call([*ft[:-1], tmp_path/'fta', '--epochs', '1', '--tune-blocks', 'attn'])
    assert code == 1 and "--tune-blocks attn" in err, err
