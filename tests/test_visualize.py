"""What notebook 07's lesson leaves out of its page: the normalisation's round trip, colour panels, and the loss curves'
axes."""
import matplotlib
matplotlib.use('Agg')
import torch
from mae_nb.model import MAEConfig, MaskedAutoencoder
from mae_nb.visualize import _denorm, plot_metrics, show_reconstructions


def test_denorm_undoes_the_normalisation():
    x = torch.rand(2, 3, 4, 4)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    normed = (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    assert torch.allclose(_denorm(normed, mean, std), x, atol=1e-6)
    assert torch.allclose(_denorm((x - 0.5) / 0.2, (0.5,), (0.2,)), x, atol=1e-6)      # one value for all channels
    assert torch.equal(_denorm(x, None, None), x)


def test_colour_panels_are_drawn_as_rgb():
    torch.manual_seed(0)
    fig = show_reconstructions(MaskedAutoencoder(MAEConfig.from_preset('cifar', depth=2, decoder_depth=1)), torch.rand(2, 3, 32, 32), n=2)
    assert len(fig.axes) == 8 and [ax.images[0].get_array().shape for ax in fig.axes] == [(32, 32, 3)] * 8


def test_loss_curves_plot_every_step():
    recs = [dict(step=s, loss=1 / s, lr=1e-3) for s in range(1, 50)]
    fig = plot_metrics(recs, 'a made-up run')
    assert len(fig.axes) == 2 and fig._suptitle.get_text() == 'a made-up run'
    assert list(fig.axes[0].lines[0].get_xdata()) == list(range(1, 50))
