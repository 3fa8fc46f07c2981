"""Discriminators written the way other SNGAN codebases write them (tiny widths, 8x8 inputs), for
the audit's tests. Each class keeps its source's idiom; comments name the source."""

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn import utils


# --- christiancosgrove/pytorch-spectral-normalization-gan: its SpectralNorm, verbatim ------------

sys.path.insert(0, str(Path(__file__).resolve().parent / "published" / "christiancosgrove"))
from spectral_normalization import SpectralNorm  # noqa: E402


class CosgroveDiscriminator(nn.Module):
    """model.py's Discriminator, narrowed: SpectralNorm wrappers around every conv and the fc."""
    def __init__(self, channels=3, leak=0.1):
        super(CosgroveDiscriminator, self).__init__()
        torch.manual_seed(0)
        self.leak = leak
        self.conv1 = SpectralNorm(nn.Conv2d(channels, 8, 3, stride=1, padding=(1, 1)))
        self.conv2 = SpectralNorm(nn.Conv2d(8, 8, 4, stride=2, padding=(1, 1)))
        self.conv3 = SpectralNorm(nn.Conv2d(8, 16, 3, stride=1, padding=(1, 1)))
        self.fc = SpectralNorm(nn.Linear(4 * 4 * 16, 1))
        for _ in range(30):  # the wrapper runs its power step at every forward, as in training
            self(torch.randn(2, channels, 8, 8))

    def forward(self, x):
        m = x
        m = nn.LeakyReLU(self.leak)(self.conv1(m))
        m = nn.LeakyReLU(self.leak)(self.conv2(m))
        m = nn.LeakyReLU(self.leak)(self.conv3(m))
        return self.fc(m.view(-1, 4 * 4 * 16))


# --- kwotsin/mimicry: torch_mimicry/modules/spectral_norm.py --------------------------------------

class SpectralNormMixin(object):
    def __init__(self, n_dim, num_iters=1, eps=1e-12):
        self.num_iters = num_iters
        self.eps = eps
        self.register_buffer('sn_u', torch.randn(1, n_dim))
        self.register_buffer('sn_sigma', torch.ones(1))

    @property
    def u(self):
        return getattr(self, 'sn_u')

    @property
    def sigma(self):
        return getattr(self, 'sn_sigma')

    def _power_iteration(self, W, u, num_iters, eps=1e-12):
        with torch.no_grad():
            for _ in range(num_iters):
                v = F.normalize(torch.matmul(u, W), eps=eps)
                u = F.normalize(torch.matmul(v, W.t()), eps=eps)
        # Note: must have gradients, otherwise weights do not get updated!
        sigma = torch.mm(u, torch.mm(W, v.t()))
        return sigma, u, v

    def sn_weights(self):
        W_mat = self.weight.view(self.weight.shape[0], -1)
        sigma, u, v = self._power_iteration(W=W_mat, u=self.u, num_iters=self.num_iters, eps=self.eps)
        if self.training:  # Update only during training
            with torch.no_grad():
                self.sigma[:] = sigma
                self.u[:] = u
        return self.weight / sigma


class SNConv2d(nn.Conv2d, SpectralNormMixin):
    def __init__(self, *args, **kwargs):
        nn.Conv2d.__init__(self, *args, **kwargs)
        SpectralNormMixin.__init__(self, n_dim=self.weight.shape[0], num_iters=kwargs.get('num_iters', 1))

    def forward(self, x):
        return F.conv2d(input=x, weight=self.sn_weights(), bias=self.bias, stride=self.stride,
                        padding=self.padding, dilation=self.dilation, groups=self.groups)


class SNLinear(nn.Linear, SpectralNormMixin):
    def __init__(self, *args, **kwargs):
        nn.Linear.__init__(self, *args, **kwargs)
        SpectralNormMixin.__init__(self, n_dim=self.weight.shape[0], num_iters=kwargs.get('num_iters', 1))

    def forward(self, x):
        return F.linear(input=x, weight=self.sn_weights(), bias=self.bias)


class MimicryDiscriminator(nn.Module):
    """A DCGAN-style D of SNConv2d/SNLinear layers whose forward divides the weight by sigma."""
    def __init__(self, ndf=8):
        super().__init__()
        torch.manual_seed(1)
        self.c1 = SNConv2d(3, ndf, 3, 1, 1)
        self.c2 = SNConv2d(ndf, ndf * 2, 4, 2, 1)
        self.l3 = SNLinear(ndf * 2, 1)
        self.activation = nn.LeakyReLU(0.1)
        for _ in range(50):
            self(torch.randn(2, 3, 8, 8))
        self.eval()

    def forward(self, x):
        h = self.activation(self.c1(x))
        h = self.activation(self.c2(h))
        h = torch.sum(h, dim=(2, 3))
        return self.l3(h)


# --- the legacy hook, torch.nn.utils.spectral_norm, in a D to be saved whole with torch.save -----

class LegacyHookDiscriminator(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.main = nn.Sequential(
            utils.spectral_norm(nn.Conv2d(3, 8, 3, 1, 1)), nn.LeakyReLU(0.2),
            utils.spectral_norm(nn.Conv2d(8, 8, 4, 2, 1)), nn.LeakyReLU(0.2))
        self.linear = utils.spectral_norm(nn.Linear(8 * 4 * 4, 1))
        for _ in range(50):
            self(torch.randn(2, 3, 8, 8))

    def forward(self, x):
        return self.linear(self.main(x).view(x.size(0), -1))


# --- a DCGAN-style D with BatchNorm between its convs ------------------------------------------

class BatchNormDiscriminator(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(4)
        self.main = nn.Sequential(
            nn.Conv2d(3, 8, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(8, 8, 4, 2, 1, bias=False), nn.BatchNorm2d(8), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(8, 1, 2, 1, 0, bias=False))
        for _ in range(10):  # running statistics away from (0, 1), as after training
            self(torch.randn(4, 3, 8, 8) * 3)
        with torch.no_grad():
            self.main[3].weight.uniform_(0.5, 2.0)
        self.eval()

    def forward(self, x):
        return self.main(x).view(-1, 1).squeeze(1)


# --- crcrpar/pytorch.sngan_projection: a projection discriminator (legacy hook on the embedding) --

class ProjectionDiscriminator(nn.Module):
    """SNResNetProjectionDiscriminator's head on a narrow conv body: output = l6(h) + <l_y(y), h>."""
    def __init__(self, num_features=4, num_classes=5, activation=F.relu):
        super().__init__()
        torch.manual_seed(5)
        self.num_features = num_features
        self.num_classes = num_classes
        self.activation = activation
        self.block1 = utils.spectral_norm(nn.Conv2d(3, num_features, 3, 1, 1))
        self.block2 = utils.spectral_norm(nn.Conv2d(num_features, num_features * 2, 4, 2, 1))
        self.l6 = utils.spectral_norm(nn.Linear(num_features * 2, 1))
        if num_classes > 0:
            self.l_y = utils.spectral_norm(nn.Embedding(num_classes, num_features * 2))
        for _ in range(50):
            self(torch.randn(2, 3, 8, 8), torch.randint(0, num_classes, (2,)))

    def forward(self, x, y=None):
        h = x
        h = self.block1(h)
        h = self.block2(self.activation(h))
        h = self.activation(h)
        # Global pooling
        h = torch.sum(h, dim=(2, 3))
        output = self.l6(h)
        if y is not None:
            output += torch.sum(self.l_y(y) * h, dim=1, keepdim=True)
        return output
