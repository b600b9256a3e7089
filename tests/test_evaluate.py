"""What notebook 08's lesson leaves out of its pages: `extract_features` keeping the model's mode (also under failure) and
with `amp` on a CPU, the refusals of the probe and kNN, and the kNN monitor that the engine's runs build on them."""
import pytest
import torch
from mae_nb.evaluate import extract_features, knn_accuracy, linear_probe
from mae_nb.data import TensorLoader
from mae_nb.datasets import dataset_info, load_tensor_dataset
from mae_nb.runs import knn_monitor_for
from mae_nb.model import MAEConfig, MaskedAutoencoder


@pytest.fixture
def model():
    torch.manual_seed(0)
    return MaskedAutoencoder(MAEConfig.from_preset('fmnist', depth=2, decoder_depth=1))


def test_mode_comes_back_after_a_failing_batch(model):
    "A batch the encoder refuses (3 channels for a 1-channel model) raises in one line, and the model is back in training mode."
    model.train()
    with pytest.raises(ValueError, match='expected images'):
        extract_features(model, [(torch.randn(2, 3, 32, 32), torch.zeros(2))])
    assert model.training


def test_amp_is_a_no_op_on_the_cpu(model):
    batches = [(torch.randn(4, 1, 28, 28), torch.arange(4)), (torch.randn(2, 1, 28, 28), torch.arange(2))]
    a, b = extract_features(model, batches, amp=True), extract_features(model, batches)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_encoder_runs_in_eval_mode_and_the_mode_comes_back(model):
    batches = [(torch.randn(4, 1, 28, 28), torch.arange(4)), (torch.randn(2, 1, 28, 28), torch.arange(2))]
    seen = []
    hook = model.blocks[0].register_forward_hook(lambda m, i, o: seen.append(m.training))
    for mode in (True, False):
        model.train(mode)
        extract_features(model, batches)
        assert model.training == mode
    hook.remove()
    assert seen == [False] * 4
    with pytest.raises(ValueError, match="'mean', 'cls'"): extract_features(model, batches, pool='max')
    with pytest.raises(ValueError, match='no batches'): extract_features(model, [])


@pytest.mark.parametrize('change, says', [
    (lambda rx, ry, qx, qy: (rx, ry[:-1], qx, qy), '100 rows but train_y has 99'),
    (lambda rx, ry, qx, qy: (rx[:0], ry[:0], qx, qy), 'train_x is empty'),
    (lambda rx, ry, qx, qy: (rx, ry, qx[:, :10], qy), '64 dimensions but test features 10'),
    (lambda rx, ry, qx, qy: (rx, ry, qx[0], qy), r'test_x must be features of shape \(N, D\)'),
])
def test_probe_and_knn_refuse_mismatched_features(change, says):
    g = torch.Generator().manual_seed(0)
    split = lambda: (torch.randn(100, 64, generator=g), torch.randint(0, 10, (100,), generator=g))
    args = change(*split(), *split())
    with pytest.raises(ValueError, match=says): linear_probe(*args)
    with pytest.raises(ValueError, match=says): knn_accuracy(*args)


def test_label_and_k_refusals():
    x, y = torch.randn(20, 4), torch.arange(20) % 10
    with pytest.raises(ValueError, match='labels go up to 9'): linear_probe(x, y, x, y, num_classes=5)
    with pytest.raises(ValueError, match='k must be at least 1'): knn_accuracy(x, y, x, y, k=0)


def test_knn_monitor(model):
    "Silent between its epochs; at them, the kNN accuracy of the features of the datasets' first images, unaugmented."
    mon = knn_monitor_for('fmnist', model.cfg, every=2, n_train=64, n_eval=32, batch_size=32, k=5)
    assert mon(model, 1) is None
    info = dataset_info('fmnist')
    feats = [extract_features(model, TensorLoader(x[:n], y[:n], 32, train=False, mean=info['mean'], std=info['std']))
             for (x, y), n in ((load_tensor_dataset('fmnist', 'train'), 64), (load_tensor_dataset('fmnist', 'test'), 32))]
    assert mon(model, 2) == dict(knn=knn_accuracy(*feats[0], *feats[1], k=5))
    with pytest.raises(ValueError, match='every 0: must be at least 1'): knn_monitor_for('fmnist', model.cfg, every=0)
