"""What notebook 08's lesson leaves out of its pages: `extract_features` under failure and with `amp` on a CPU."""
import pytest
import torch
from mae_nb.evaluate import extract_features
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
