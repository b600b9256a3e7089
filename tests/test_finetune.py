"""What notebook 09's lesson leaves out of its page: the refusals of the classifier, of `load_encoder`, of the layer
decay, of the evaluation and of `tune_blocks`."""
import pytest
import torch
from mae_nb.finetune import ViTClassifier, evaluate_classifier, layer_decay_groups, load_encoder, tune_blocks
from mae_nb.model import MAEConfig, MaskedAutoencoder

CFG = MAEConfig.from_preset('fmnist', depth=3, decoder_depth=1)


@pytest.fixture(scope='module')
def sd():
    torch.manual_seed(0)
    return MaskedAutoencoder(CFG).state_dict()


@pytest.mark.parametrize('cfg, keep, says', [
    (CFG, lambda k: k.startswith('decoder_'), 'holds no encoder'),
    (MAEConfig.from_preset('fmnist', depth=3, embed_dim=64), lambda k: True, 'does not fit'),
    (MAEConfig.from_preset('fmnist', depth=3, in_chans=3), lambda k: True, 'patch_embed.proj.weight'),
    (CFG, lambda k: not k.startswith('blocks.2.'), 'lacks encoder tensors'),
])
def test_load_encoder_refuses_what_does_not_fit(sd, cfg, keep, says):
    with pytest.raises(ValueError, match=says): load_encoder(ViTClassifier(cfg, 10), {k: v for k, v in sd.items() if keep(k)})


def test_classifier_refusals():
    clf = ViTClassifier(CFG, 10)
    with pytest.raises(ValueError, match='mean, cls'): ViTClassifier(CFG, 10, pool='max')
    with pytest.raises(ValueError, match='at least 1'): ViTClassifier(CFG, 0)
    with pytest.raises(ValueError, match=r'\(0, 1\]'): layer_decay_groups(clf, 0.05, 0)
    with pytest.raises(ValueError, match='no batches'): evaluate_classifier(clf, [])
    with pytest.raises(ValueError, match='tune_blocks 4: must be 0–3'): tune_blocks(clf, 4)
    with pytest.raises(ValueError, match="'mlp'"): tune_blocks(clf, 'attn')
