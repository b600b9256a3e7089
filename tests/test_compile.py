"""Regional compilation on the CPU (inductor + gcc): the compiled training step computes what the eager one does, blocks
share their graphs, nothing breaks the graph, and a compiled run reports its first step's seconds apart from its speed."""
import json
import torch
import torch._dynamo.testing
from mae_nb.finetune import ViTClassifier
from mae_nb.model import MAEConfig, MaskedAutoencoder
from mae_nb.train import param_groups
from mae_nb.distributed import compile_model
from mae_nb.checkpoint import read_metrics
from mae_nb.runs import RunPlan, TrainConfig, make_train_step, pretrain

TINY = MAEConfig(img_size=28, patch_size=7, in_chans=1, embed_dim=32, depth=2, num_heads=2,
                 decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2)


def loss_and_grads(compile: bool):
    "One micro-step of an accumulation (no update yet): its loss and the gradients it leaves."
    torch.manual_seed(0)
    model = MaskedAutoencoder(TINY)
    step = make_train_step(model, param_groups(model, 0.05), RunPlan(1, 100, 0, 8, 1e-3), TrainConfig(compile=compile, accum_iter=2),
                           torch.device('cpu'))
    g = torch.Generator().manual_seed(1)
    x, noise = torch.rand(8, 1, 28, 28, generator=g), torch.rand(8, 16, generator=g)
    loss = step(lambda m, x, n: m(x, noise=n).loss, x, noise)
    return loss, {n: p.grad for n, p in model.named_parameters() if p.requires_grad}


def test_compiled_step_matches_eager():
    (le, ge), (lc, gc) = loss_and_grads(False), loss_and_grads(True)
    torch.testing.assert_close(lc, le, rtol=1e-5, atol=1e-6)
    assert ge.keys() == gc.keys()
    for name in ge: torch.testing.assert_close(gc[name], ge[name], rtol=1e-4, atol=1e-6, msg=name)


def test_blocks_share_graphs_whatever_their_drop_path_rate():
    counter = torch._dynamo.testing.CompileCounter()
    clf = compile_model(ViTClassifier(MAEConfig.from_preset('fmnist'), 10, drop_path=0.1), backend=counter).train()
    clf(torch.rand(2, 1, 28, 28))
    assert len(clf.blocks) == 6 and counter.frame_count <= 2, counter.frame_count   # rate 0 in block 0, then one graph for 0.02 … 0.1


def test_whole_model_has_no_graph_break():
    model = MaskedAutoencoder(MAEConfig.from_preset('fmnist'))
    explain = torch._dynamo.explain(model)(torch.rand(2, 1, 28, 28), noise=torch.rand(2, 49))
    assert explain.graph_break_count == 0 and explain.graph_count == 1, explain.break_reasons


def test_compiled_run_reports_its_first_step(tmp_path):
    s = pretrain(TINY, TrainConfig(compile=True, limit=64, batch_size=32, epochs=1, log_every=1, progress=False, out_dir=str(tmp_path)))
    first = [r for r in read_metrics(tmp_path/'metrics.jsonl') if 'first_step_s' in r]
    assert s['step'] == 2 and first == [dict(step=1, first_step_s=s['first_step_s'], compile=True)] and s['first_step_s'] > 0
    ck = torch.load(tmp_path/'checkpoint.pt', weights_only=True)
    assert sorted(ck['model']) == sorted(MaskedAutoencoder(TINY).state_dict())   # compiled blocks keep the official names
