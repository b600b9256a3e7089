"""The GPU paths, checked on a CPU: the model, the loaders' device side, every masking and the fine-tuning augmentation run on fake
CUDA tensors (FakeTensorMode propagates devices and shapes without computing), so a CPU tensor meeting a CUDA one anywhere in them
fails here; a host read of a device value fails too. And evaluation reads its results from the device once, not once per batch."""
import pytest
import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from mae_nb.core import to_device
from mae_nb.data import _per_channel
from mae_nb.datasets import IMAGENET_MEAN, IMAGENET_STD
from mae_nb.loaders import ShardedTensorLoader, _apply_crops, _crop_plan
from mae_nb.evaluate import extract_features, knn_accuracy
from mae_nb.augment import finetune_augment
from mae_nb.finetune import ViTClassifier, evaluate_classifier
from mae_nb.masking import MASKINGS
from mae_nb.model import MAEConfig, MaskedAutoencoder
from mae_nb.train import batch_noise

CFG = MAEConfig.from_preset('fmnist')


@pytest.fixture
def fake_cuda(monkeypatch):
    """A fake-CUDA mode. Pinning is host memory, which a fake tensor has none of: `pin_memory` becomes a spy that records whether
    each tensor it is given is one contiguous block (a strided view would be pinned and copied piecewise)."""
    pinned = []
    monkeypatch.setattr(torch.Tensor, 'is_pinned', lambda self: False)
    monkeypatch.setattr(torch.Tensor, 'pin_memory', lambda self: pinned.append(self.is_contiguous()) or self)
    mode = FakeTensorMode(allow_non_fake_inputs=True)          # real tensors made outside (weights, CPU draws) may come in
    mode.pinned = pinned
    return mode


def test_model_on_fake_cuda_with_every_masking(fake_cuda):
    "Pretraining's forward on CUDA, its noise drawn on the CPU as `pretrain` draws it (rank 1 of 2), for random, block and grid masking."
    model = MaskedAutoencoder(CFG).train()
    noises = {m: batch_noise(MAEConfig.from_preset('fmnist', masking=m), 0, 0, 3, 4, rank=1, world=2) for m in MASKINGS}
    with fake_cuda:
        model = model.to('cuda')
        x = torch.rand(4, 1, 28, 28, device='cuda')
        for masking, noise in noises.items():
            out = model(x, noise=to_device(noise, 'cuda'))
            assert out.loss.device.type == out.pred.device.type == out.mask.device.type == 'cuda', masking
        assert model(x).loss.device.type == 'cuda'                              # noise drawn on the device
        latent, mask, ids_restore = model.forward_encoder(x, 0.0)
        assert latent.shape == (4, 1 + CFG.num_patches, CFG.embed_dim) and latent.device.type == 'cuda'
    assert fake_cuda.pinned == [True] * len(MASKINGS)                           # every noise copied as one pinned block


def test_loaders_device_side_on_fake_cuda(fake_cuda):
    "ShardedTensorLoader on CUDA (dataset on the device, crops and flips drawn on the CPU for the global batch), and the device part of DeviceDecodeLoader."
    images, labels = torch.randint(0, 256, (16, 1, 28, 28), dtype=torch.uint8), torch.arange(16)
    sizes = [(30, 40), (48, 64), (50, 30)]
    plans = {train: _crop_plan(sizes, 24, train, torch.Generator().manual_seed(0)) for train in (True, False)}   # numbers, on the CPU
    with fake_cuda:
        for augment in (True, False):
            loader = ShardedTensorLoader(images, labels, 4, img_size=24, device='cuda', rank=1, world_size=2, augment=augment)
            x, y = next(iter(loader))
            assert (x.device.type, y.device.type, tuple(x.shape)) == ('cuda', 'cuda', (4, 1, 24, 24))
        imgs = [torch.randint(0, 256, (3, *s), dtype=torch.uint8, device='cuda') for s in sizes]
        mean, std = _per_channel(IMAGENET_MEAN, 'cuda'), _per_channel(IMAGENET_STD, 'cuda')
        for train, (cuts, flips) in plans.items():
            x = _apply_crops(imgs, cuts, flips, 24, mean, std)
            assert x.device.type == 'cuda' and x.shape == (3, 3, 24, 24)
    assert len(fake_cuda.pinned) >= 3 and all(fake_cuda.pinned)                 # boxes, flips (rank 1's rows of the global batch), the flip mask


def test_finetuning_on_fake_cuda(fake_cuda):
    "The fine-tuning recipe's batch augmentation (RandAugment, erasing, MixUp/CutMix) and the classifier with drop path, on CUDA."
    clf = ViTClassifier(CFG, 10, drop_path=0.1).train()
    with fake_cuda:
        clf = clf.to('cuda')
        x, y = torch.randn(8, 1, 28, 28, device='cuda'), torch.randint(0, 10, (8,), device='cuda')
        mean, std = (torch.tensor(v, device='cuda') for v in ((0.286,), (0.353,)))
        xa, t = finetune_augment(x, y, 10, mean, std)
        assert xa.device.type == t.device.type == 'cuda' and t.shape == (8, 10)
        loss = F.cross_entropy(clf(xa).float(), t)
        assert loss.device.type == 'cuda' and loss.shape == ()


def test_a_device_mix_fails_here(fake_cuda):
    "The check can fail: a CPU tensor meeting a CUDA one in these paths raises under the fake mode."
    with fake_cuda, pytest.raises(Exception, match='(?i)device'):
        torch.rand(4, 3, device='cuda') + torch.rand(4, 3)


class HostReads(TorchDispatchMode):
    "Counts the reads of a tensor's value by the host (`.item()`, `int()`, `float()`): on a GPU, each one waits for the device."
    def __init__(self):
        super().__init__(); self.n = 0
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += func is torch.ops.aten._local_scalar_dense.default
        return func(*args, **(kwargs or {}))


def host_reads(f) -> int:
    with HostReads() as reads: f()
    return reads.n


def test_evaluation_reads_the_device_once():
    "Accuracy, loss and kNN votes are summed on the device and read at the end: as many host reads for 6 batches as for 2."
    torch.manual_seed(0)
    clf, g = ViTClassifier(CFG, 10), torch.Generator().manual_seed(0)
    data = [(torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))) for _ in range(6)]
    assert host_reads(lambda: evaluate_classifier(clf, data[:2])) == host_reads(lambda: evaluate_classifier(clf, data)) == 2   # accuracy, loss
    tr_x, tr_y, te_x, te_y = torch.randn(50, 8, generator=g), torch.arange(50) % 3, torch.randn(24, 8, generator=g), torch.arange(24) % 3
    knn = lambda n: host_reads(lambda: knn_accuracy(tr_x, tr_y, te_x[:n], te_y[:n], k=5, batch_size=4))
    assert knn(8) == knn(24)                                                    # 2 chunks or 6: the label checks and one count


def test_features_reach_the_host_in_one_copy(fake_cuda, monkeypatch):
    "extract_features on CUDA: the encoder's features and labels stay on the device until the end, then one copy each."
    copies, cpu = [], torch.Tensor.cpu
    monkeypatch.setattr(torch.Tensor, 'cpu', lambda self, *a, **k: copies.append(tuple(self.shape)) or cpu(self, *a, **k))
    model = MaskedAutoencoder(CFG)
    with fake_cuda:
        model = model.to('cuda')
        batches = [(torch.rand(4, 1, 28, 28, device='cuda'), torch.arange(4, device='cuda')) for _ in range(3)]
        f, y = extract_features(model, batches, amp=True)
    assert f.device.type == y.device.type == 'cpu' and copies == [(12, CFG.embed_dim), (12,)]
