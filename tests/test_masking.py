"""What notebook 02's lesson leaves out of its page: the refusals, and the plain loop over images that the batched
block-wise masking replaces, kept as the reference that `block_noise` must match in distribution."""
import math, random
import pytest
import torch
import torch.nn.functional as F
from mae_nb.masking import block_noise, grid_noise, mask_noise, masking_from_noise, num_keep, random_masking


@pytest.mark.parametrize('bad', [1.0, -0.1, 1.5, float('nan'), 'high'])
def test_ratio_outside_the_range_is_refused(bad):
    with pytest.raises(ValueError, match=r'\[0, 1\)'): random_masking(torch.zeros(2, 49, 8), bad)


def test_strategy_refusals():
    with pytest.raises(ValueError, match='1 − 1/s²'): grid_noise(1, (14, 14), 0.5)
    with pytest.raises(ValueError, match='random, block, grid'): mask_noise('checkerboard', 1, (14, 14), 0.75)


def block_noise_loop(batch_size, grid, mask_ratio, min_block=None, seed=0, tries=100):
    "The reference: the same rectangles, drawn image by image with Python's RNG."
    h, w = grid; N = h * w
    target, min_block, rng = N - num_keep(N, mask_ratio), min_block or max(1, N // 12), random.Random(seed)
    removed = torch.zeros(batch_size, h, w)
    for b in range(batch_size):
        count = 0
        for _ in range(tries):
            left = target - count
            if left <= 0: break
            area = rng.uniform(min_block, max(min_block, left))
            aspect = math.exp(rng.uniform(math.log(0.3), math.log(1 / 0.3)))
            bh, bw = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if not (1 <= bh <= h and 1 <= bw <= w): continue
            top, lft = rng.randrange(h - bh + 1), rng.randrange(w - bw + 1)
            new = int((removed[b, top:top+bh, lft:lft+bw] == 0).sum())
            if 0 < new <= left: removed[b, top:top+bh, lft:lft+bw] = 1; count += new
    return removed.view(batch_size, N)


def clustering(removed, h, w):
    "Mean share of a removed patch's 4-neighbours (inside the grid) that are removed too."
    m, k = removed.float().view(-1, 1, h, w), torch.tensor([[0., 1, 0], [1, 0, 1], [0, 1, 0]]).view(1, 1, 3, 3)
    return float((F.conv2d(m, k, padding=1) / F.conv2d(torch.ones_like(m), k, padding=1))[m == 1].mean())


@pytest.mark.parametrize('grid, r', [((14, 14), 0.5), ((14, 14), 0.75), ((7, 7), 0.75)])
def test_batched_blocks_match_the_loop(grid, r):
    "The same number of patches covered by blocks, equally clustered, as the loop over images draws."
    ref, ours = block_noise_loop(512, grid, r), block_noise(512, grid, r, generator=torch.Generator().manual_seed(0)) >= 1
    assert abs(ours.float().sum(1).mean() - ref.sum(1).mean()) <= 0.03 * ref.sum(1).mean()
    assert abs(clustering(ours, *grid) - clustering(ref, *grid)) <= 0.03


def test_blocks_are_clustered_and_random_is_not():
    g = torch.Generator().manual_seed(0)
    share = {s: clustering(masking_from_noise(mask_noise(s, 64, (14, 14), 0.5, generator=g), 0.5).mask, 14, 14) for s in ('random', 'block')}
    assert share['block'] > share['random'] + 0.2, share
