"""Issue 22, values, results, divergence and messages: every number is finite and in range where it enters, a result is never
replaced by one of another kind or run, a diverging run saves nothing diverged and says what is true of it, and a message
names only flags the command has. Table-driven like tests/test_errors.py: one line on stderr, the exit status, no traceback,
files intact. Everything runs in this process (one torch import)."""
import argparse, contextlib, hashlib, io, json, re, shutil
from pathlib import Path
import pytest
import torch
from mae_nb.cli import build_parser, command_fields, main, user_message
from mae_nb.core import ConfigError, RunError
from mae_nb.distributed import TrainStep

QUICK = ['--limit', '128', '--batch-size', '64', '--no-progress', '--log-every', '1']
PARSER = build_parser()
SUBS = next(a for a in PARSER._actions if isinstance(a, argparse._SubParsersAction)).choices


from conftest import call   # (exit status, stdout, stderr) of `mae_nb ARGV`, run in this process


def digest(path: Path) -> str: return hashlib.sha256(path.read_bytes()).hexdigest()


def flags_it_lacks(command: str, line: str) -> set[str]:
    "The flags `line` names that `command` does not have, and any field left in backticks."
    own = {o for a in SUBS[command]._actions for o in a.option_strings}
    return {f for f in re.findall(r'(?<![\w-])--[a-z][\w-]*', line) if f not in own} | set(re.findall(r'`[^`]*`', line))


@pytest.fixture(scope='module')
def root(tmp_path_factory) -> Path:
    """A finished one-epoch pretraining run; a fake demo folder (its checkpoint and demo.json, and an old demo's probe.json);
    a checkpoint without a config; one whose stored config holds NaN; an empty folder; a folder with another kind of result."""
    root = tmp_path_factory.mktemp('values')
    code, _, err = call(['pretrain', *QUICK, '--epochs', '1', '--out', root/'run'])
    assert code == 0, err
    demo = root/'demo'; demo.mkdir()
    shutil.copy(root/'run'/'checkpoint.pt', demo/'checkpoint.pt')
    result = dict(pretrained=dict(linear_probe=71.0, knn=70.0), random_init=dict(linear_probe=60.0, knn=50.0), gain_linear_probe=11.0)
    (demo/'demo.json').write_text(json.dumps(dict(result='demo', **result)))
    old = root/'old_demo'; old.mkdir()                                            # a demo from before it wrote demo.json
    shutil.copy(root/'run'/'checkpoint.pt', old/'checkpoint.pt'); (old/'probe.json').write_text(json.dumps(result))
    ck = torch.load(root/'run'/'checkpoint.pt', weights_only=True)
    torch.save(dict(model=ck['model']), root/'no_config.pt')
    torch.save(dict(model=ck['model'], config={**ck['config'], 'mlp_ratio': float('nan')}), root/'nan_config.pt')
    (root/'empty').mkdir()
    (root/'ab').mkdir(); (root/'ab'/'default-seed0-smoke.json').write_text(json.dumps(dict(result='probe', pretrained={})))
    return root


KNN = ['--limit', '64', '--eval-limit', '64', '--batch-size', '64', '--device', 'cpu']
PROBE = [*KNN, '--epochs', '1']
# (name, argv with {root}, what stderr's one line says, exit status, files that must be intact)
CASES = [
    # every number finite and in range, from a flag or from a stored config
    ('warm-up inf', ['pretrain', *QUICK, '--warmup-epochs', 'inf', '--out', '{root}/x'], '--warmup-epochs inf: must be a finite number', 1, []),
    ('warm-up nan', ['pretrain', *QUICK, '--warmup-epochs', 'nan', '--out', '{root}/x'], '--warmup-epochs nan: must be a finite number', 1, []),
    ('warm-up 1e309', ['pretrain', *QUICK, '--warmup-epochs', '1e309', '--out', '{root}/x'], '--warmup-epochs inf: must be a finite number', 1, []),
    ('min lr -inf', ['pretrain', *QUICK, '--min-lr=-inf', '--out', '{root}/x'], '--min-lr -inf: must be a finite number', 1, []),
    ('weight decay nan', ['pretrain', *QUICK, '--weight-decay', 'nan', '--out', '{root}/x'], '--weight-decay nan: must be a finite', 1, []),
    ('lr that overflows AdamW', ['pretrain', *QUICK, '--lr', '1e300', '--out', '{root}/x'], '--lr 1e+300: must be at most 4.6e+18', 1, []),
    ('lr above the ceiling', ['pretrain', *QUICK, '--lr', '11', '--out', '{root}/x'], '--lr 11.0: must be in (0, 10]', 1, []),
    ('blr above the ceiling', ['pretrain', *QUICK, '--blr', '100', '--out', '{root}/x'], '--blr 100.0: must be at most 40 with an effective batch of 64', 1, []),
    ('huge epochs', ['pretrain', *QUICK, '--epochs', str(10 ** 20), '--out', '{root}/x'], f'--epochs {10 ** 20}: must be at most 4.6e+18', 1, []),
    ('mixup inf', ['finetune', *QUICK, '--mixup', 'inf', '--out', '{root}/x'], '--mixup inf: must be a finite number', 1, []),
    ('cutmix nan', ['finetune', *QUICK, '--cutmix', 'nan', '--out', '{root}/x'], '--cutmix nan: must be a finite number', 1, []),
    ('drop path nan', ['finetune', *QUICK, '--drop-path', 'nan', '--out', '{root}/x'], '--drop-path nan: must be a finite number', 1, []),
    ('randaug magnitude inf', ['finetune', *QUICK, '--randaug-magnitude', 'inf', '--out', '{root}/x'], '--randaug-magnitude inf: must be a finite', 1, []),
    ('finetune lr inf', ['finetune', *QUICK, '--lr', 'inf', '--out', '{root}/x'], '--lr inf: must be a finite number', 1, []),
    ('demo blr inf', ['demo', '--blr', 'inf', '--out', '{root}/x'], '--blr inf: must be a finite number', 1, []),
    ('demo warm-up nan', ['demo', '--warmup-epochs', 'nan', '--out', '{root}/x'], '--warmup-epochs nan: must be a finite number', 1, []),
    ('bench peak inf', ['bench', '--peak-tflops', 'inf', '--device', 'cpu'], '--peak-tflops inf: must be a finite number', 1, []),
    ('ablate huge seed', ['ablate', 'default', '--seeds', str(10 ** 20), '--dry-run'], f'--seeds {10 ** 20}: must be at least 0 (and below 2**62)', 1, []),
    ('stored config with nan', ['probe', '{root}/nan_config.pt', *PROBE], 'nan_config.pt stores a config no model can be made from (mlp_ratio nan', 1,
     ['nan_config.pt']),
    # messages in the command's own words
    ('probe img-size 4', ['probe', '{root}/run/checkpoint.pt', '--img-size', '4'], "--img-size 4: must be a multiple of the model's 4-px patches, at least 8", 1, []),
    ('probe img-size 30', ['probe', '{root}/run/checkpoint.pt', '--img-size', '30'], '--img-size 30: must be a multiple', 1, []),
    ('ablate holdout leaves no batch', ['ablate', 'default', '--holdout', '59999', '--dry-run'], '--holdout 59999: must be in [0, 59', 1, []),
    ('convert into an empty folder', ['convert', '{root}/run/checkpoint.pt', '{root}/empty'], 'is a folder: --to mae writes one file; give a file name', 1,
     ['run/checkpoint.pt']),
    ('convert timm into an empty folder', ['convert', '{root}/run/checkpoint.pt', '{root}/empty', '--to', 'timm'], 'is a folder: --to timm writes one file', 1, []),
    ('imagefolder without a root', ['pretrain', '--dataset', 'imagefolder', '--out', '{root}/x'], '--data-root None: must be the folder holding train/', 1, []),
    ('probe imagefolder without a root', ['knn', '{root}/run/checkpoint.pt', '--dataset', 'imagefolder'], 'imagefolder', 1, []),
    ('batch larger than the data', ['pretrain', '--limit', '32', '--batch-size', '64', '--out', '{root}/x'], '--batch-size 64 is larger than the 32 samples', 1, []),
    ('demo batch larger than the data', ['demo', '--limit', '32', '--batch-size', '64', '--out', '{root}/xd'], '--batch-size 64 is larger than the 32 samples', 1, []),
    ('checkpoint without a config', ['probe', '{root}/no_config.pt'], 'no_config.pt stores no config (its architecture): convert it first', 1, ['no_config.pt']),
    # a result never replaced by another kind, or by another run's
    ('probe over a demo result', ['probe', '{root}/demo/checkpoint.pt', '--out', '{root}/demo/demo.json'], 'is not a result of this kind (a demo result', 1,
     ['demo/demo.json']),
    ("probe over an old demo's probe.json", ['probe', '{root}/old_demo/checkpoint.pt'], 'is not a result of this kind (a demo result', 1, ['old_demo/probe.json']),
    ('bench over a demo result', ['bench', '--json', '{root}/demo/demo.json'], '--json', 1, ['demo/demo.json']),
    ('ablate over a probe result', ['ablate', 'default', '--smoke', '--out', '{root}/ab', '--work', '{root}/abw'], 'is not a result of this kind (a probe result', 1,
     ['ab/default-seed0-smoke.json']),
]


@pytest.mark.parametrize('name, argv, says, status, intact', CASES, ids=[c[0] for c in CASES])
def test_value_or_message(root, name, argv, says, status, intact):
    before = {f: digest(root/f) for f in intact}
    code, _, err = call([a.format(root=root) for a in argv])
    lines = err.strip().splitlines()
    assert code == status and len(lines) == 1 and says in lines[0], (code, err)
    assert 'Traceback' not in err and not flags_it_lacks(argv[0], lines[0]), lines[0]
    for f, d in before.items(): assert digest(root/f) == d, f'{f} changed'


def test_demo_result_survives_probe(root):
    "A probe of the demo's checkpoint writes probe.json beside demo.json, which stays; the same probe again replaces only its own result; a kNN, or a probe of another checkpoint, may not replace it."
    before = digest(root/'demo'/'demo.json')
    code, _, err = call(['probe', root/'demo'/'checkpoint.pt', *PROBE])
    assert code == 0, err
    assert digest(root/'demo'/'demo.json') == before and json.loads((root/'demo'/'probe.json').read_text())['result'] == 'probe'
    assert call(['probe', root/'demo'/'..'/'demo'/'checkpoint.pt', *PROBE])[0] == 0                     # the same run, spelt otherwise
    probed = digest(root/'demo'/'probe.json')
    for argv, says in [(['knn', root/'demo'/'checkpoint.pt', '--out', root/'demo'/'probe.json'], 'a probe result, which a knn never replaces'),
                       (['probe', root/'run'/'checkpoint.pt', '--out', root/'demo'/'probe.json'], 'holds the probe result of another run')]:
        code, _, err = call([*argv, *(PROBE if argv[0] == 'probe' else KNN)])
        assert code == 1 and len(err.strip().splitlines()) == 1 and says in err, err
    assert digest(root/'demo'/'probe.json') == probed and digest(root/'demo'/'demo.json') == before


def poison_at(step: int):
    "A `TrainStep.update` whose `step`-th update leaves NaN weights, while the loss read at that step (from before it) is finite."
    update = TrainStep.update
    def poisoned(self):
        update(self)
        if self.sched.last_epoch == step: next(self.model.parameters()).data.fill_(float('nan'))
    return poisoned


@pytest.mark.parametrize('at, extra, says, kept', [
    (3, [], 'the weights became non-finite at step 3 (epoch 0): stopped before saving them; the last good checkpoint {ckpt} is kept: '
            'start again with a lower --blr and another --out', 2),
    (1, ['--lr', '1e-3'], 'the weights became non-finite at step 1 (epoch 0): stopped before saving them; no checkpoint was written: '
                          'start again with a lower --lr', None)])
def test_divergence_saves_nothing_diverged(tmp_path, monkeypatch, at, extra, says, kept):
    "A checkpoint due at every step: the one on disk is the last with finite weights, and the line is true of this run (no fp16 advice without fp16)."
    monkeypatch.setattr(TrainStep, 'update', poison_at(at))
    code, _, err = call(['pretrain', '--limit', '256', '--batch-size', '64', '--no-progress', '--log-every', '10', '--ckpt-every', '1',
                         '--amp', 'off', '--epochs', '1', *extra, '--out', tmp_path])
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and says.format(ckpt=tmp_path/'checkpoint.pt') in lines[0] and 'bf16' not in err, err
    assert not flags_it_lacks('pretrain', lines[0]) and not list(tmp_path.glob('*.tmp'))
    if kept is None: assert not (tmp_path/'checkpoint.pt').exists()
    else:
        ck = torch.load(tmp_path/'checkpoint.pt', weights_only=True)
        assert ck['step'] == kept and all(torch.isfinite(v).all() for v in ck['model'].values() if v.is_floating_point())


SAMPLE = [   # messages the package raises (fields in backticks, or a ConfigError's field), as each command's user reads them
    ConfigError('batch_size', 0, 'at least 1'), ConfigError('mask_ratio', 0.99, 'below 0.98'), ConfigError('img_size', 4, 'at least 8'),
    ConfigError('out_dir', '', 'a folder'), ConfigError('holdout', -1, 'at least 0'), ConfigError('blr', 100.0, 'at most 40'),
    RunError('pass `resume` to continue that run, or choose another `out_dir`'),
    RunError('`out_dir` runs/x is in use by another run right now: wait for it to end, or choose another `out_dir`'),
    RunError('`batch_size` 64 is larger than the 32 samples per rank: lower `batch_size`, or use more images'),
    RunError('use `compile_mode` default, or `accum_iter` 1 with a larger `batch_size`'),
    FloatingPointError('stopped: resume with `amp` bf16 instead of fp16, or start again with a lower `blr` and another `out_dir`'),
    RunError('`out` x.json exists and is not a result of this kind: choose another file name'),
    RunError('`json` x.json is a folder'), ValueError('`checkpoint` x.pt, `data_root` d, `dataset` cifar10, `pool` cls, `lr` 1'),
]


@pytest.mark.parametrize('command', sorted(SUBS))
def test_messages_name_only_the_commands_flags(command):
    "Through `user_message`, no message names a flag the command lacks or leaves a field in backticks."
    fields = command_fields(PARSER, command)
    for e in SAMPLE:
        line = user_message(e, fields)
        assert not flags_it_lacks(command, line), (command, line)
    if 'out_dir' in fields: assert '--' in user_message(SAMPLE[3], fields)
