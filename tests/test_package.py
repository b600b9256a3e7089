"""The package imports with torch and einops alone (the GPU machine cannot install matplotlib or tqdm extras); the optional timm
and transformers are imported only when used."""
import subprocess, sys, textwrap


def test_import_without_matplotlib_and_tqdm():
    code = textwrap.dedent("""
        import sys
        BLOCKED = ('matplotlib', 'tqdm', 'fastcore', 'IPython', 'timm', 'transformers')
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in BLOCKED: raise ImportError(f'blocked {name}')
        sys.meta_path.insert(0, Block())
        import torch
        from mae_nb.model import MAEConfig, MaskedAutoencoder
        import mae_nb.core, mae_nb.patches, mae_nb.masking, mae_nb.pos_embed, mae_nb.vit, mae_nb.data, mae_nb.visualize, mae_nb.cli
        import mae_nb.datasets, mae_nb.loaders, mae_nb.augment
        import mae_nb.train, mae_nb.checkpoint, mae_nb.distributed, mae_nb.runs, mae_nb.evaluate, mae_nb.finetune, mae_nb.experiments, mae_nb.ablations, mae_nb.paper, mae_nb.bench, mae_nb.suite, mae_nb.weights
        from mae_nb.weights import have_transformers
        assert not have_transformers()                      # blocked: bench then skips the HF contender instead of failing
        from mae_nb.cli import build_parser
        assert build_parser().parse_args(['pretrain', '--epochs', '1']).epochs == 1
        m = MaskedAutoencoder(MAEConfig.from_preset('fmnist'))
        print(m(torch.rand(2, 1, 28, 28)).pred.shape)
    """)
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert 'torch.Size([2, 49, 16])' in r.stdout
