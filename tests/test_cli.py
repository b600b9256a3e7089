"The `mae_nb` console command, run as a user runs it."
import json, os, subprocess, sys
from pathlib import Path
import pytest
import torch

MAE_NB = Path(sys.executable).parent/'mae_nb'
ENV = {**os.environ, 'MPLBACKEND': 'Agg'}


def run(*args):
    return subprocess.run([MAE_NB, *map(str, args)], capture_output=True, text=True, env=ENV)


def test_help_lists_commands():
    r = run('--help')
    commands = ('demo', 'pretrain', 'probe', 'knn', 'finetune', 'ablate', 'flops')
    assert r.returncode == 0 and all(c in r.stdout for c in commands)


def test_every_help_works(capsys):
    "`mae_nb --help` and `mae_nb COMMAND --help` of every subcommand the parser has, in this process (argparse %-formats help texts)."
    from mae_nb.cli import build_parser, main
    commands = list(build_parser()._subparsers._group_actions[0].choices)
    assert {'demo', 'pretrain', 'finetune', 'probe', 'knn', 'bench', 'ablate', 'convert', 'flops'} <= set(commands)
    for argv in [['--help']] + [[c, '--help'] for c in commands]:
        with pytest.raises(SystemExit) as e: main(argv)
        out = capsys.readouterr()
        assert e.value.code == 0 and out.out.startswith('usage: mae_nb') and not out.err, (argv, out.err)


def test_flops_table():
    r = run('flops', 'fmnist', 'large')
    assert r.returncode == 0, r.stderr
    rows = [l for l in r.stdout.splitlines() if l.startswith('| large')]
    assert len(rows) == 1 and '303.1' in rows[0]      # ViT-L encoder: 303.1 M trainable parameters


def test_unknown_names_list_known_ones():
    r = run('flops', 'gigantic')
    assert r.returncode == 2 and 'choose one of tiny, small, base, large, huge, cifar, fmnist' in r.stderr
    r = run('pretrain', '--dataset', 'imagenet21k')
    assert r.returncode == 2 and 'choose one of fmnist, cifar10, imagefolder' in r.stderr


def test_missing_data_says_where_to_put_it(tmp_path):
    r = run('pretrain', '--preset', 'cifar', '--dataset', 'cifar10', '--data-root', tmp_path, '--out', tmp_path/'run')
    assert r.returncode == 1 and 'cifar-10-batches-py' in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_short_pretraining_then_probe(tmp_path):
    r = run('pretrain', '--limit', '256', '--batch-size', '64', '--epochs', '2', '--no-progress', '--out', tmp_path)
    assert r.returncode == 0, r.stderr
    s = json.loads((tmp_path/'summary.json').read_text())
    assert s['step'] == 8 and s['final_loss'] > 0
    r = run('probe', tmp_path/'checkpoint.pt', '--limit', '1000', '--eval-limit', '500', '--epochs', '2')
    assert r.returncode == 0, r.stderr
    p = json.loads((tmp_path/'probe.json').read_text())['pretrained']
    assert 10 < p['linear_probe'] <= 100 and p['train_images'] == 1000 and p['eval_images'] == 500


def test_corrupt_checkpoint_is_named(tmp_path):
    (tmp_path/'checkpoint.pt').write_bytes(b'PK\x03\x04 not really a checkpoint')
    r = run('probe', tmp_path/'checkpoint.pt')
    assert r.returncode == 1 and 'checkpoint.pt is not a readable checkpoint' in r.stderr, r.stderr
    r = run('pretrain', '--limit', '64', '--batch-size', '32', '--out', tmp_path, '--resume', '--no-progress')
    assert r.returncode == 1 and 'is not a readable checkpoint' in r.stderr, r.stderr


def small_fmnist(root: Path, n_train: int, n_test: int) -> Path:
    "The first images of each Fashion-MNIST split, written as the idx files `MAE_NB_DATA` points the package to."
    import gzip, struct
    from mae_nb.data import fashion_mnist
    for split, stem, n in (('train', 'train', n_train), ('test', 't10k', n_test)):
        imgs, labels = fashion_mnist(split)
        for kind, t in (('images-idx3', imgs[:n]), ('labels-idx1', labels[:n].to(torch.uint8))):
            header = bytes([0, 0, 8, t.ndim]) + struct.pack(f'>{t.ndim}I', *t.shape)
            (root/'fashion-mnist').mkdir(parents=True, exist_ok=True)
            with gzip.open(root/'fashion-mnist'/f'{stem}-{kind}-ubyte.gz', 'wb') as f: f.write(header + t.numpy().tobytes())
    return root


def test_demo_writes_its_outputs(tmp_path):
    # the demo as a user runs it, on a small copy of the data in the real file format (MAE_NB_DATA points the package to it)
    data = small_fmnist(tmp_path/'data', 512, 200)
    r = subprocess.run([MAE_NB, 'demo', '--epochs', '1', '--limit', '512', '--probe-epochs', '2', '--probe-train', '256', '--batch-size', '256', '--no-progress', '--out', tmp_path/'run'],
                       capture_output=True, text=True, env={**ENV, 'MAE_NB_DATA': str(data)})
    assert r.returncode == 0, r.stderr
    for f in ('checkpoint.pt', 'metrics.jsonl', 'loss.png', 'reconstructions.png', 'demo.json'):
        assert (tmp_path/'run'/f).stat().st_size > 0, f
    assert 'pretraining:' not in r.stderr, r.stderr                      # --no-progress: no progress bar
    res = json.loads((tmp_path/'run'/'demo.json').read_text())
    assert {'pretrained', 'random_init', 'gain_linear_probe'} <= set(res) and res['pretrain']['step'] == 2
    for k in ('pretrained', 'random_init'):
        assert (res[k]['train_images'], res[k]['eval_images'], res[k]['pool']) == (256, 200, 'mean'), res[k]
    assert 'gain from pretraining' in r.stdout and 'this run took' in r.stdout


@pytest.mark.parametrize('device, says', [('gpu0', "--device gpu0: must be auto, cpu, cuda or cuda:N"), ('cuda', 'CUDA is not available'),
                                          ('cuda:x', "--device cuda:x")])
def test_bad_device_is_one_line(tmp_path, device, says):
    if device == 'cuda' and torch.cuda.is_available(): pytest.skip('CUDA is available here')
    r = run('pretrain', '--device', device, '--limit', '64', '--batch-size', '32', '--no-progress', '--out', tmp_path)
    assert r.returncode == 1 and says in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path/'checkpoint.pt').exists()


def test_version():
    import mae_nb
    r = run('--version')
    assert r.returncode == 0 and r.stdout.strip() == f'mae_nb {mae_nb.__version__}', r.stdout + r.stderr


def test_pretrain_on_an_image_folder(tmp_path):
    from PIL import Image
    import numpy as np
    rng = np.random.default_rng(0)
    for cls in ('cats', 'dogs'):
        (tmp_path/'data'/'train'/cls).mkdir(parents=True)
        for i in range(4):
            size = (40 + 3 * i, 36)
            Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(tmp_path/'data'/'train'/cls/f'{i}.{"png" if i % 2 else "jpg"}')
    r = run('pretrain', '--preset', 'cifar', '--dataset', 'imagefolder', '--data-root', tmp_path/'data', '--batch-size', '4',
            '--epochs', '1', '--num-workers', '0', '--no-progress', '--log-every', '1', '--out', tmp_path/'run')
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path/'run'/'summary.json').read_text())['step'] == 2
    r = run('pretrain', '--preset', 'cifar', '--dataset', 'imagefolder', '--out', tmp_path/'run2')
    assert r.returncode == 1 and 'root' in r.stderr, r.stderr
