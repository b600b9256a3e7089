"""What a run needs from its data is checked before its first step, and bad data never crashes a run: an image folder's
splits and classes, link loops and files reached twice (each refused in one line naming the folder, link or file, with
nothing trained and nothing written); device decoding of damaged PNGs and JPEGs (skipped as the workers skip them, never a
segmentation fault); a damaged deflate stream in Fashion-MNIST's .gz files (one line naming the file)."""
import contextlib, io, os, shutil, subprocess, sys
from pathlib import Path
import pytest
from conftest import ROOT
from mae_nb.cli import main

ENV = {**os.environ, 'PYTHONPATH': str(ROOT), 'MPLBACKEND': 'Agg', 'OMP_NUM_THREADS': '1'}


from conftest import call   # (exit status, stdout, stderr) of `mae_nb ARGV`, run in this process


def save_images(folder: Path, n: int, seed: int, ext='png'):
    import numpy as np
    from PIL import Image
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n): Image.fromarray(rng.integers(0, 256, (36, 40, 3), dtype=np.uint8)).save(folder/f'{i}.{ext}')


@pytest.fixture(scope='module')
def tree(tmp_path_factory) -> Path:
    "root/{train,val}/{a,b}/: four images per class in train/, two in val/."
    root = tmp_path_factory.mktemp('tree')/'data'
    for k, (split, cls) in enumerate([('train', 'a'), ('train', 'b'), ('val', 'a'), ('val', 'b')]):
        save_images(root/split/cls, 4 if split == 'train' else 2, k)
    return root


def link(path: str, target: str):
    return lambda r: (r/path).symlink_to(target)


def empty(path: str):
    def change(r):
        for f in (r/path).iterdir(): f.unlink()
    return change


FINETUNE = ['finetune', '--preset', 'cifar', '--dataset', 'imagefolder', '--batch-size', '4', '--epochs', '1', '--num-workers', '0',
            '--no-progress']
PRETRAIN = [a if a != 'finetune' else 'pretrain' for a in FINETUNE]
# (name, command, how the tree is changed, what stderr's one line says)
CASES = [
    ('finetune without val/', FINETUNE, lambda r: shutil.rmtree(r/'val'), 'val not found: this split is read too (to evaluate)'),
    ('val/ has a class train/ lacks', FINETUNE, lambda r: shutil.copytree(r/'val'/'b', r/'val'/'c'),
     'val has class folders that {root}/train lacks (c): the model would have no label for their images'),
    ('train/ empty', FINETUNE, lambda r: [shutil.rmtree(d) for d in (r/'train').iterdir()], 'train holds no class folders'),
    ('no train/', PRETRAIN, lambda r: shutil.rmtree(r/'train'), 'train not found: an image folder holds one sub-folder of images per class'),
    ('a class folder without images', FINETUNE, lambda r: (r/'train'/'c').mkdir(), 'train/c holds no image files (.jpg, .jpeg, .png'),
    ('a val class folder without images', FINETUNE, empty('val/b'), 'val/b holds no image files'),
    ('a class folder of text files', PRETRAIN, lambda r: (r/'train'/'c').mkdir() or (r/'train'/'c'/'notes.txt').write_text('x'),
     'train/c holds no image files'),
    ('link loop', PRETRAIN, link('train/a/up', '..'), 'train/a/up links to {root}/train, a folder that holds it: following it would loop'),
    ('link to the root', FINETUNE, link('train/a/up', '../..'), 'train/a/up links to {root}, a folder that holds it'),
    ('link to itself', PRETRAIN, link('train/a/me', '.'), 'train/a/me links to {root}/train/a, a folder that holds it'),
    ('class folder linked to train/', PRETRAIN, link('train/c', '.'), 'train/c links to {root}/train, a folder that holds it'),
    ('a loop between two classes', PRETRAIN, lambda r: link('train/a/x', '../b')(r) or link('train/b/y', '../a')(r), 'loop'),
    ('a loop in val/', FINETUNE, link('val/b/up', '..'), 'val/b/up links to {root}/val'),
    ('a file linked into another class', PRETRAIN, link('train/b/x.png', '../a/0.png'),
     'train/b/x.png is {root}/train/a/0.png again (through a link): a file may be in a split once'),
    ('a folder linked into another class', FINETUNE, link('train/b/more', '../a'), 'again (through a link)'),
    ('a file linked twice in its class', PRETRAIN, link('train/a/9.png', '0.png'), 'train/a/9.png is {root}/train/a/0.png again'),
    ('imagefolder without --data-root', FINETUNE, lambda r: None, '--data-root None: must be the folder holding train/'),
]


@pytest.mark.parametrize('name, argv, change, says', CASES, ids=[c[0] for c in CASES])
def test_image_folder_refused_before_the_first_step(tree, tmp_path, name, argv, change, says):
    root = tmp_path/'data'
    shutil.copytree(tree, root, symlinks=True); change(root)
    where = [] if 'data-root' in name else ['--data-root', root]
    code, _, err = call([*argv, *where, '--out', tmp_path/'run'])
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and says.format(root=root) in lines[0], (code, err)
    assert 'Traceback' not in err
    assert not (tmp_path/'run').exists() or not any((tmp_path/'run').iterdir()), 'trained, or wrote something, before refusing'


def test_what_is_allowed(tree, tmp_path):
    """Pretraining needs only train/; a val/ with fewer classes than train/ is allowed and labelled by train/'s classes
    (torchvision alone would label val/b as class 0); a class folder kept elsewhere and linked in is followed."""
    from mae_nb.datasets import imagefolder
    root = tmp_path/'data'
    shutil.copytree(tree, root, symlinks=True)
    shutil.rmtree(root/'val'/'a')
    assert imagefolder(root, 'val').targets == [1, 1] and imagefolder(root, 'val').classes == ['a', 'b']
    code, _, err = call([*FINETUNE, '--data-root', root, '--out', tmp_path/'ft'])
    assert code == 0 and (tmp_path/'ft'/'checkpoint.pt').exists(), err
    (root/'train'/'b').rename(tmp_path/'b_elsewhere'); (root/'train'/'b').symlink_to(tmp_path/'b_elsewhere')
    shutil.rmtree(root/'val')
    assert len(imagefolder(root).samples) == 8
    code, _, err = call([*PRETRAIN, '--data-root', root, '--out', tmp_path/'pt'])
    assert code == 0 and (tmp_path/'pt'/'checkpoint.pt').exists(), err


def short_png(path: Path, complete_stream: bool):
    """A PNG whose header announces 36 rows but whose data holds fewer, every chunk whole: the compressed stream cut short
    (PIL: "image file is truncated"), or complete with 10 rows (PIL: the missing rows black). torchvision: a segfault, both."""
    import struct, zlib
    import numpy as np
    def chunk(kind, data): return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
    rows = np.random.default_rng(1).integers(0, 256, (36, 1 + 40 * 3), dtype=np.uint8)
    rows[:, 0] = 0                                                       # filter type: none
    data = zlib.compress(rows[:10].tobytes()) if complete_stream else zlib.compress(rows.tobytes())[:2000]
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', 40, 36, 8, 2, 0, 0, 0)) + chunk(b'IDAT', data)
                     + chunk(b'IEND', b''))


@pytest.fixture(scope='module')
def damaged_tree(tmp_path_factory) -> Path:
    "train/a: two good PNGs, a PNG cut short, a PNG with fewer rows than its header; train/b: two good JPEGs, one cut in half."
    root = tmp_path_factory.mktemp('damaged')
    save_images(root/'train'/'a', 2, 0)
    save_images(root/'train'/'b', 2, 1, 'jpg')
    short_png(root/'train'/'a'/'cut.png', complete_stream=False)
    short_png(root/'train'/'a'/'rows.png', complete_stream=True)
    jpeg = (root/'train'/'b'/'0.jpg').read_bytes()
    (root/'train'/'b'/'cut.jpg').write_bytes(jpeg[:len(jpeg) // 2])
    return root


def test_device_decoding_skips_what_the_workers_skip(damaged_tree, capsys):
    """Decoding on the device (in a subprocess: a crash would take pytest down) serves and skips what the workers do: the
    cut PNG and JPEG are skipped with the same warning, the PNG with fewer rows is served (its missing rows black)."""
    served = "list(l); print(sorted(p.rsplit('/', 1)[1] for p in l.bad_files), l.skipped)"
    code = (f"from mae_nb.loaders import make_loader; l = make_loader('imagefolder', 'train', 7, img_size=24, root={str(damaged_tree)!r}, "
            f"num_workers=0, train=False, decode='device'); {served}")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0 and 'Traceback' not in r.stderr, (r.returncode, r.stderr)
    assert r.stdout.strip() == "['cut.jpg', 'cut.png'] 2", r.stdout
    from mae_nb.loaders import make_loader
    l = make_loader('imagefolder', 'train', 7, img_size=24, root=damaged_tree, num_workers=0, train=False)
    exec(served)
    workers = capsys.readouterr()
    assert workers.out.strip() == r.stdout.strip()
    said = lambda err: [l.split(' (')[0] for l in err.splitlines()]
    assert said(r.stderr) == said(workers.err) and len(said(r.stderr)) == 2, (r.stderr, workers.err)   # the same warning, file by file
    assert all(l.startswith('mae_nb: skipping unreadable image') for l in r.stderr.splitlines()), r.stderr


@pytest.fixture
def fmnist_copy(tmp_path, monkeypatch) -> Path:
    "A copy of data/fashion-mnist/ that MAE_NB_DATA points to (the large files linked, not copied)."
    folder = tmp_path/'fashion-mnist'; folder.mkdir()
    for f in (ROOT/'data'/'fashion-mnist').glob('*.gz'): (folder/f.name).symlink_to(f)
    monkeypatch.setenv('MAE_NB_DATA', str(tmp_path))
    return folder


@pytest.mark.parametrize('damage, says', [
    (lambda b: b[:len(b) // 2] + bytes(256) + b[len(b) // 2 + 256:], 'Error -3 while decompressing data'),   # the deflate stream
    (lambda b: b[:len(b) // 2], 'Compressed file ended before the end-of-stream marker was reached'),          # cut short
    (lambda b: b[:-8] + bytes(8), 'CRC check failed'),                                                           # its checksum
])
def test_damaged_fashion_mnist_is_one_line(fmnist_copy, tmp_path, damage, says):
    labels = fmnist_copy/'train-labels-idx1-ubyte.gz'
    good = labels.resolve().read_bytes()
    labels.unlink(); labels.write_bytes(damage(good))
    code, _, err = call(['pretrain', '--limit', '128', '--batch-size', '64', '--no-progress', '--out', tmp_path/'run'])
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and 'Traceback' not in err, err
    assert f'{labels} is not a readable gzip file' in lines[0] and says in lines[0] and 'copy it again' in lines[0], lines
