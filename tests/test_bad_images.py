"Unreadable files in an ImageFolder tree are skipped, deterministically, counted and named once: never a mid-epoch traceback."
import os, subprocess, sys
from pathlib import Path
import pytest
import torch
from mae_nb import datasets
from mae_nb.datasets import UnreadableImages, imagefolder
from mae_nb.loaders import DeviceDecodeLoader, FolderLoader, image_bytes, make_loader

MAE_NB = Path(sys.executable).parent/'mae_nb'
ENV = {**os.environ, 'MPLBACKEND': 'Agg', 'OMP_NUM_THREADS': '1'}
BAD = {1: 'truncated', 2: 'empty', 7: 'text'}      # ImageFolder indices of the damaged files
STAND_IN = {1: 3, 2: 3, 7: 0}                      # the next readable image, wrapping round at the end
SLOTS = [STAND_IN.get(i, i) for i in range(8)]     # what each slot serves


def write_tree(root: Path) -> Path:
    "root/train/{cat,dog}/…: five good images and, at indices 1, 2, 7, a truncated JPEG, an empty PNG, a text file named .jpg."
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    for cls in ('cat', 'dog'): (root/'train'/cls).mkdir(parents=True)
    for i, name in enumerate(('cat/a.jpg', 'cat/d.png', 'dog/e.jpg', 'dog/f.png', 'dog/g.jpg')):
        Image.fromarray(rng.integers(0, 256, (36, 40 + 3 * i, 3), dtype=np.uint8)).save(root/'train'/name)
    jpeg = (root/'train/cat/a.jpg').read_bytes()
    (root/'train/cat/b.jpg').write_bytes(jpeg[:len(jpeg) // 2])
    (root/'train/cat/c.png').write_bytes(b'')
    (root/'train/dog/z.jpg').write_text('<html>not an image</html>')
    return root


@pytest.fixture(scope='module')
def tree(tmp_path_factory):
    root = write_tree(tmp_path_factory.mktemp('bad'))
    assert [Path(p).name for p, _ in imagefolder(root).samples] == ['a.jpg', 'b.jpg', 'c.png', 'd.png', 'e.jpg', 'f.png', 'g.jpg', 'z.jpg']
    return root


@pytest.fixture(autouse=True)
def fresh_process():
    "Each test as in a fresh process: no file named yet."
    datasets._REPORTED.clear(); yield


def assert_same(a, b):
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b): assert torch.equal(xa, xb) and torch.equal(ya, yb)


def loaders(tree, decode, **kw):
    "(loader over the damaged tree, loader over the tree with each damaged file replaced by its stand-in)."
    if decode == 'workers': ds = imagefolder(tree, 'train', img_size=24, train=kw.get('train', True))
    else: ds = image_bytes(tree, 'train')
    make = (lambda d: FolderLoader(d, **kw)) if decode == 'workers' else (lambda d: DeviceDecodeLoader(d, img_size=24, **kw))
    return make(ds), make(torch.utils.data.Subset(ds, SLOTS))


@pytest.mark.parametrize('decode,workers', [('workers', 0), ('workers', 2), ('device', 0), ('device', 2)])
def test_an_epoch_skips_unreadable_files_deterministically(tree, decode, workers, capfd):
    loader, repaired = loaders(tree, decode, batch_size=2, seed=5, num_workers=workers)
    epoch = list(loader)                                                     # no exception
    assert loader.skipped == 3 and {Path(p).name for p in loader.bad_files} == {'b.jpg', 'c.png', 'z.jpg'}
    assert_same(epoch, list(repaired))                                      # the stand-ins are the next readable images, same crops
    assert_same(list(loader), epoch); assert loader.skipped == 6             # the same epoch again; counted over the loader's life
    assert_same(list(loader.iter_from(2)), epoch[2:])                        # exact resume
    assert loader.skipped == 6 + sum(i in BAD for i in loader.indices()[4:].tolist())     # only the slots served count
    n = loader.skipped; loader.set_epoch(1); assert len(list(loader)) == 4 and loader.skipped == n + 3
    err = capfd.readouterr().err
    assert 'Traceback' not in err and err.count('mae_nb: skipping unreadable image') >= 3
    if workers == 0: assert err.count('mae_nb: skipping unreadable image') == 3      # once per file per process


@pytest.mark.parametrize('decode', ['workers', 'device'])
def test_stand_ins_keep_their_labels_and_the_lines_name_them(tree, decode, capfd):
    loader, _ = loaders(tree, decode, batch_size=4, train=False, num_workers=0)
    ds = imagefolder(tree)
    y = torch.cat([y for _, y in loader])
    assert y.tolist() == [ds.targets[j] for j in SLOTS] and y[7] == 0                # image 7 is a dog; its stand-in, image 0, a cat
    lines = capfd.readouterr().err.splitlines()
    assert len(lines) == 3
    for i, line in zip(BAD, lines):
        assert line.startswith(f'mae_nb: skipping unreadable image {ds.samples[i][0]} (')
        assert line.endswith(f'; image {STAND_IN[i]} ({ds.samples[STAND_IN[i]][0]}) stands in')


@pytest.mark.parametrize('decode,workers', [('workers', 0), ('workers', 2), ('device', 0), ('device', 2)])
def test_no_readable_image_is_one_clear_error(tmp_path, decode, workers):
    (tmp_path/'train'/'x').mkdir(parents=True)
    for name in ('a.jpg', 'b.png'): (tmp_path/'train'/'x'/name).write_text('junk')
    loader = make_loader('imagefolder', 'train', 1, img_size=24, root=tmp_path, num_workers=workers, decode=decode)
    with pytest.raises(UnreadableImages, match='none of the 2 images can be read') as e: list(loader)
    assert isinstance(e.value, ValueError) and len(str(e.value).splitlines()) == 1 and 'Traceback' not in str(e.value)


@pytest.mark.parametrize('decode', ['workers', 'device'])
def test_pretrain_skips_unreadable_files(tree, tmp_path, decode):
    r = subprocess.run([MAE_NB, 'pretrain', '--preset', 'cifar', '--dataset', 'imagefolder', '--data-root', tree, '--decode', decode,
                        '--num-workers', '0', '--batch-size', '4', '--epochs', '1', '--no-progress', '--out', tmp_path/'run'],
                       capture_output=True, text=True, env=ENV)
    assert r.returncode == 0 and 'Traceback' not in r.stderr, r.stderr
    lines = [l for l in r.stderr.splitlines() if l.startswith('mae_nb: skipping unreadable image')]
    assert sorted(Path(l.split()[4]).name for l in lines) == ['b.jpg', 'c.png', 'z.jpg'], r.stderr
    assert (tmp_path/'run'/'checkpoint.pt').exists()


def test_skip_policy_is_one_sentence():
    assert datasets.SKIP_POLICY.endswith('.') and datasets.SKIP_POLICY.count('. ') == 0 and 'skipped' in datasets.SKIP_POLICY
