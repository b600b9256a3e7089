"""What notebook 05's lesson leaves out of its page: every refusal of `MAEConfig` and of the forward pass, and the
decorator that writes the class one method at a time."""
import pytest
import torch
from mae_nb.model import MAEConfig, MaskedAutoencoder, patch_to


@pytest.mark.parametrize('make, says', [
    (lambda: MAEConfig.from_preset('vit_gigantic'), 'tiny, small, base, large, huge, cifar, fmnist'),
    (lambda: MAEConfig(mask_ratio=1.0), r'\[0, 1\)'),
    (lambda: MAEConfig(img_size=30, patch_size=4), 'not divisible by patch_size'),
    (lambda: MAEConfig(embed_dim=100, num_heads=16), 'not divisible by num_heads'),
    (lambda: MAEConfig(embed_dim=18, num_heads=3), 'divisible by 4'),
    (lambda: MAEConfig(masking='spiral'), 'random, block, grid'),
    (lambda: MAEConfig.from_preset('fmnist', mask_ratio=0.99), 'leave none of the 49 patches visible'),
    (lambda: MAEConfig(depth=0), 'depth 0: must be a whole number of at least 1'),
])
def test_config_refusals(make, says):
    with pytest.raises(ValueError, match=says): make()


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    return MaskedAutoencoder(MAEConfig.from_preset('fmnist', depth=2, decoder_depth=1))


@pytest.mark.parametrize('call, says', [
    (lambda m: m(torch.rand(2, 3, 28, 28)), r'\(B, 1, 28, 28\)'),
    (lambda m: m(torch.rand(2, 1, 32, 32)), r'got \(2, 1, 32, 32\)'),
    (lambda m: m(torch.rand(2, 1, 28, 28), mask_ratio=1.0), r'\[0, 1\)'),
    (lambda m: m(torch.rand(2, 1, 28, 28), noise=torch.rand(2, 50)), 'noise must have shape'),
])
def test_forward_refusals(model, call, says):
    with pytest.raises(ValueError, match=says): call(model)


def test_patch_to_adds_a_method_under_the_class_name():
    class Demo: pass
    @patch_to(Demo)
    def twice(self, x): return 2 * x
    assert Demo().twice(3) == 6 and Demo.twice.__qualname__ == 'Demo.twice'
    assert MaskedAutoencoder.forward_encoder.__qualname__ == 'MaskedAutoencoder.forward_encoder'


def test_same_noise_same_loss_and_ratio_zero_keeps_the_order(model):
    imgs, noise = torch.rand(4, 1, 28, 28), torch.rand(4, 49)
    with torch.no_grad():
        assert float(model(imgs, noise=noise).loss) == float(model(imgs, noise=noise).loss)
        _, mask, ids_restore = model.forward_encoder(imgs, 0)
    assert mask.sum() == 0 and torch.equal(ids_restore, torch.arange(49).expand(4, 49))
