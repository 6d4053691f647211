"""An inference-only form of the book's UNetWrapper with its batch norms folded into the
convolutions that follow them and ReLUs done in place: the same function away from the input's
border (zero padding then sits on the other side of the affine map, which changes the outermost
~22 pixels), about a third less work. Segmentation crops carry a wider margin than that."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lungview.models.nets import UNetWrapper


def _affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


def _fold(conv: nn.Conv2d, scale: torch.Tensor, shift: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights and bias of conv(scale * x + shift) as a conv of x."""
    w = conv.weight * scale[None, :, None, None]
    b = conv.bias + (conv.weight * shift[None, :, None, None]).sum(dim=(1, 2, 3))
    return w.detach().clone(), b.detach().clone()


class FusedUNet(nn.Module):
    def __init__(self, wrapper: UNetWrapper):
        super().__init__()
        unet = wrapper.unet
        if unet.depth != 3 or not isinstance(unet.up_path[0].up, nn.ConvTranspose2d):
            raise ValueError("FusedUNet covers the book's depth-3, up-conv, batch-norm U-Net")
        blocks = [d.block for d in unet.down_path]
        ups = list(unet.up_path)
        ident = lambda n: (torch.ones(n), torch.zeros(n))  # noqa: E731
        self.convs = nn.ParameterList()
        self.size_multiple = wrapper.size_multiple

        def add(conv, scale, shift):
            w, b = _fold(conv, scale, shift)
            self.convs.append(nn.Parameter(w, requires_grad=False))
            self.convs.append(nn.Parameter(b, requires_grad=False))

        # Down path: input BN -> conv0; BN2 -> conv3; BN5 of level i -> conv0 of level i+1
        # (average pooling commutes with a per-channel affine map).
        previous = _affine(wrapper.input_batchnorm)
        post = []
        for blk in blocks:
            add(blk[0], *previous)
            add(blk[3], *_affine(blk[2]))
            previous = _affine(blk[5])
            post.append(previous)
        # The bottom BN feeds a transposed convolution (not foldable into one bias): kept.
        self.register_buffer("bottom_scale", post[2][0].detach().clone())
        self.register_buffer("bottom_shift", post[2][1].detach().clone())
        self.ups = nn.ParameterList()
        for j, up in enumerate(ups):
            self.ups.append(nn.Parameter(up.up.weight.detach().clone(), requires_grad=False))
            self.ups.append(nn.Parameter(up.up.bias.detach().clone(), requires_grad=False))
            bridge_scale, bridge_shift = post[1 - j]
            n_up = up.up.out_channels
            s0, c0 = ident(n_up)
            cb = up.conv_block.block
            add(cb[0], torch.cat([s0, bridge_scale]), torch.cat([c0, bridge_shift]))
            add(cb[3], *_affine(cb[2]))
            post.append(_affine(cb[5]))
        self.register_buffer("mid_scale", post[3][0].detach().clone())
        self.register_buffer("mid_shift", post[3][1].detach().clone())
        w, b = _fold(unet.last, *post[4])
        self.last_w = nn.Parameter(w, requires_grad=False)
        self.last_b = nn.Parameter(b, requires_grad=False)

    def _conv(self, x, k):
        return F.relu_(F.conv2d(x, self.convs[2 * k], self.convs[2 * k + 1], padding=1))

    @staticmethod
    def _bn(x, scale, shift):
        return torch.addcmul(shift[None, :, None, None], x, scale[None, :, None, None])

    def forward(self, x):
        bridges = []
        k = 0
        for level in range(3):
            x = self._conv(self._conv(x, k), k + 1)
            k += 2
            if level < 2:
                bridges.append(x)
                x = F.avg_pool2d(x, 2)
        x = self._bn(x, self.bottom_scale, self.bottom_shift)
        for j in range(2):
            x = F.conv_transpose2d(x, self.ups[2 * j], self.ups[2 * j + 1], stride=2)
            x = self._conv(self._conv(torch.cat([x, bridges[1 - j]], 1), k), k + 1)
            k += 2
            if j == 0:
                x = self._bn(x, self.mid_scale, self.mid_shift)
        return torch.sigmoid(F.conv2d(x, self.last_w, self.last_b))
