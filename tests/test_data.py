"""What notebook 00's lesson leaves out of its page: the refusals of `fashion_mnist` and `TensorLoader`, the finer
statistics of the crop boxes, the augmentation's uint8 path, the loader's resizing, and resuming at every batch (the engine's
`ShardedTensorLoader`, whose one-process batches are the lesson's)."""
import pytest
import torch
from mae_nb.data import TensorLoader, batch_augment, crop_boxes, fashion_mnist
from mae_nb.loaders import ShardedTensorLoader


def test_fashion_mnist_refusals(tmp_path):
    with pytest.raises(ValueError, match="'train' or 'test'"): fashion_mnist('val')
    with pytest.raises(FileNotFoundError, match='not found'): fashion_mnist(root=tmp_path)


def test_crop_boxes_statistics():
    "Whole pixels; small boxes (which always fit) log-uniform in aspect, centred on 1; every edge position occurs."
    top, left, h, w = b = crop_boxes(10_000, 32, 40, generator=torch.Generator().manual_seed(0)).T
    assert torch.equal(b, b.round()) and (h >= 1).all() and (w >= 1).all()
    frac = h * w / (32 * 40)
    assert abs((w / h)[frac < 0.5].log().mean()) < 0.03
    assert (top == 0).any() and (top + h == 32).any() and (left == 0).any() and (left + w == 40).any()


def test_batch_augment_uint8_and_refusal():
    x = torch.rand(6, 3, 32, 32)
    x8 = (x * 255).round().to(torch.uint8)
    assert torch.allclose(batch_augment(x8, 32, scale=(1, 1), ratio=(1, 1), flip=False), x8 / 255, atol=1e-5)
    assert batch_augment(x8, 24).dtype == torch.float32
    with pytest.raises(ValueError, match=r'\(B, C, H, W\)'): batch_augment(x[0], 32)


@pytest.fixture
def toy():
    return torch.randint(0, 256, (51, 1, 12, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)), torch.arange(51)


def test_loader_resume_from_every_batch(toy):
    "Any start gives the tail of the epoch, including the start past the last batch; a start beyond is refused."
    imgs, ids = toy
    full = list(ShardedTensorLoader(imgs, ids, 8, seed=3))
    assert len({int(i) for _, y in full for i in y}) == 48
    for k in range(7):
        tail = list(ShardedTensorLoader(imgs, ids, 8, seed=3).iter_from(k))
        assert len(tail) == 6 - k and all(torch.equal(a, b) and torch.equal(u, v) for (a, u), (b, v) in zip(tail, full[k:]))
    with pytest.raises(ValueError, match=r'\[0, 6\]'): ShardedTensorLoader(imgs, ids, 8).iter_from(7)


def test_loader_resizes(toy):
    "Another `img_size` resizes, for training and evaluation; shrinking is antialiased (neighbours averaged)."
    imgs, ids = toy
    for train in (True, False): assert next(iter(TensorLoader(imgs, ids, 8, img_size=16, train=train)))[0].shape == (8, 1, 16, 16)
    halved = torch.cat([x for x, _ in TensorLoader(imgs, ids, 8, train=False, img_size=6, mean=(0,), std=(1,))])
    assert 0 <= halved.min() and halved.max() <= 1 and halved.std() < 0.5 * (imgs / 255).std()


@pytest.mark.parametrize('args, says', [
    (lambda i, l: (i.float(), l), 'uint8'),
    (lambda i, l: (i[:, 0], l), r'images\[:, None\]'),
    (lambda i, l: (i, l[:-1]), '51 images but 50 labels'),
])
def test_loader_refuses_what_it_cannot_serve(toy, args, says):
    with pytest.raises(ValueError, match=says): TensorLoader(*args(*toy), 8)


def test_loader_refuses_a_batch_larger_than_the_epoch(toy):
    with pytest.raises(ValueError, match='at least 1'): TensorLoader(*toy, 0)
    with pytest.raises(ValueError, match='lower `batch_size`'): TensorLoader(*toy, 52)
    assert len(TensorLoader(*toy, 52, train=False)) == 1                               # evaluation keeps the partial batch


def test_loader_refuses_wrong_statistics(toy):
    with pytest.raises(ValueError, match='one value per channel'): TensorLoader(*toy, 8, mean=(0.1, 0.2))


def test_read_idx_round_trip(tmp_path):
    "A file written in the idx format, gzipped, reads back as the tensor it holds."
    import gzip, struct
    from mae_nb.data import read_idx
    x = torch.randint(0, 256, (3, 5, 7), dtype=torch.uint8)
    with gzip.open(tmp_path/'x.gz', 'wb') as f: f.write(bytes([0, 0, 8, 3]) + struct.pack('>3I', 3, 5, 7) + x.numpy().tobytes())
    assert torch.equal(read_idx(tmp_path/'x.gz'), x)
