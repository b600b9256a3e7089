"Fast CPU checks of mae_nb.weights: config inference, released-checkpoint loading, timm export, HF round trip."
import pytest
import torch
from mae_nb.model import PRESETS, MAEConfig, MaskedAutoencoder, encoder_state_dict
from mae_nb.weights import (config_from_state_dict, from_hf, hf_key_map, load_hf, load_pretrained, save_hf, save_timm, to_hf,
                            to_timm, timm_name)

CFG = MAEConfig(img_size=32, patch_size=8, in_chans=3, embed_dim=64, depth=2, num_heads=4,
                decoder_embed_dim=64, decoder_depth=1, decoder_num_heads=4, norm_pix_loss=True)


def _model(cfg=CFG, seed=0):
    torch.manual_seed(seed)
    m = MaskedAutoencoder(cfg).eval()
    with torch.no_grad():                                       # move every weight off its init, so that a swap would show
        for p in m.parameters(): p.add_(0.05 * torch.randn_like(p))
    return m


@pytest.mark.parametrize('preset', list(PRESETS))
def test_config_from_presets(preset):
    cfg = MAEConfig.from_preset(preset)
    with torch.device('meta'): sd = MaskedAutoencoder(cfg).state_dict()
    assert config_from_state_dict(sd) == cfg
    assert config_from_state_dict({f'module.{k}': v for k, v in sd.items()}) == cfg


def test_config_needs_heads_for_unknown_width():
    with torch.device('meta'): sd = MaskedAutoencoder(MAEConfig(img_size=16, patch_size=4, embed_dim=40, depth=1, num_heads=5)).state_dict()
    with pytest.raises(ValueError, match='pass num_heads='): config_from_state_dict(sd)
    assert config_from_state_dict(sd, num_heads=5).num_heads == 5


def test_load_full_and_encoder_only(tmp_path):
    src = _model()
    x, noise = torch.rand(3, 3, 32, 32), torch.rand(3, 16)
    torch.save({'model': src.state_dict()}, tmp_path/'full.pth')
    torch.save({'model': encoder_state_dict(src)}, tmp_path/'enc.pth')
    full, rep = load_pretrained(tmp_path/'full.pth', norm_pix_loss=True)
    assert rep['config'] == CFG and not rep['encoder_only'] and rep['missing'] == []
    with torch.no_grad(): assert torch.equal(full.eval()(x, noise=noise).loss, src(x, noise=noise).loss)
    enc, rep = load_pretrained(tmp_path/'enc.pth', decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=4)
    assert rep['encoder_only'] and 'mask_token' in rep['missing'] and rep['config'].decoder_embed_dim == 32
    with torch.no_grad(): assert torch.equal(enc.eval().forward_encoder(x, 0.75, noise)[0], src.forward_encoder(x, 0.75, noise)[0])
    torch.save({'model': {**src.state_dict(), 'head.weight': torch.zeros(10, 64)}}, tmp_path/'ft.pth')
    assert load_pretrained(tmp_path/'ft.pth', norm_pix_loss=True)[1]['ignored'] == ['head.weight']
    torch.save({'model': {**src.state_dict(), 'extra.weight': torch.zeros(1)}}, tmp_path/'bad.pth')
    with pytest.raises(ValueError, match='does not fit'): load_pretrained(tmp_path/'bad.pth')
    (tmp_path/'junk.pth').write_bytes(b'not a checkpoint')
    with pytest.raises(ValueError, match='not a readable checkpoint'): load_pretrained(tmp_path/'junk.pth')


@pytest.mark.parametrize('cfg', [CFG, MAEConfig.from_preset('fmnist', depth=2, mlp_ratio=2.0)], ids=['rgb', 'fmnist'])
def test_timm_export_by_values(cfg):
    "timm's ViT with our exported encoder computes what our encoder computes (all tokens, after the final norm), for random non-trivial weights."
    pytest.importorskip('timm')
    src = _model(cfg)
    assert src.cls_token.abs().sum() > 0 and src.pos_embed.abs().sum() > 0          # nothing left at zero that could hide a swap
    vit = to_timm(src).eval()
    x = torch.randn(2, cfg.in_chans, cfg.img_size, cfg.img_size)
    with torch.no_grad(): ours, theirs = src.forward_encoder(x, 0)[0], vit.forward_features(x)
    assert theirs.shape == ours.shape == (2, 1 + cfg.num_patches, cfg.embed_dim)
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)
    with torch.no_grad(): torch.testing.assert_close(vit(x), ours[:, 0], atol=1e-5, rtol=1e-5)   # num_classes=0: the pooled cls token
    with torch.no_grad(): src.blocks[-1].mlp.fc2.weight.add_(torch.randn_like(src.blocks[-1].mlp.fc2.weight))   # the export is a copy,
    with torch.no_grad(): assert not torch.allclose(vit.forward_features(x), src.forward_encoder(x, 0)[0], atol=1e-3)   # and the check sees it
    assert timm_name(MAEConfig.from_preset('large')) == 'vit_large_patch16_224.mae' and timm_name(CFG) is None


@pytest.mark.parametrize('norm_pix', [False, True])
def test_hf_round_trip_equal_loss_and_predictions(norm_pix):
    pytest.importorskip('transformers')
    src = _model(MAEConfig(**{**CFG.__dict__, 'norm_pix_loss': norm_pix}))
    hf = to_hf(src).eval()
    pe = hf.vit.embeddings.position_embeddings
    assert pe.abs().sum() > 0 and torch.equal(pe, src.pos_embed)          # real sin-cos values, not HF's zeros
    assert torch.equal(hf.decoder.decoder_pos_embed, src.decoder_pos_embed)
    x, noise = torch.rand(4, 3, 32, 32), torch.rand(4, 16)
    with torch.no_grad(): ours, theirs = src(x, noise=noise), hf(pixel_values=x, noise=noise)
    torch.testing.assert_close(theirs.loss, ours.loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(theirs.logits, ours.pred, atol=1e-4, rtol=1e-4)
    assert torch.equal(theirs.mask, ours.mask)
    back = from_hf(hf)
    assert back.cfg == src.cfg
    for k, v in src.state_dict().items(): assert torch.equal(back.state_dict()[k], v), k


def test_hf_key_map_covers_every_weight():
    with torch.device('meta'): keys = set(MaskedAutoencoder(CFG).state_dict())
    for scheme in ('new', 'old'):
        m = hf_key_map(CFG, scheme)
        assert set(m) == keys
        flat = [t for v in m.values() for t in (v if isinstance(v, tuple) else (v,))]
        assert len(flat) == len(set(flat))                                 # no two of ours land on one HF tensor


def test_hf_rejects_mask_token_encoder():
    pytest.importorskip('transformers')
    with pytest.raises(ValueError, match='mask-token'):
        to_hf(MaskedAutoencoder(MAEConfig(**{**CFG.__dict__, 'encoder_mask_tokens': True})))


def test_hf_files_round_trip(tmp_path):
    pytest.importorskip('transformers')
    src = _model()
    back = load_hf(str(save_hf(src, tmp_path/'hf')))                     # save_pretrained / from_pretrained
    assert back.cfg == src.cfg
    for k, v in src.state_dict().items(): assert torch.equal(back.state_dict()[k], v), k


def test_timm_file(tmp_path):
    pytest.importorskip('timm')
    src = _model()
    sd = torch.load(save_timm(src, tmp_path/'enc.pth'), weights_only=True)
    assert set(sd) == set(encoder_state_dict(src)) and to_timm(src).load_state_dict(sd, strict=True) is not None
