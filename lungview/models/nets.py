"""The book's networks (Deep Learning with PyTorch, part 2), module for module, so that its
published checkpoints load with strict=True: UNetWrapper (segmentation) and LunaModel (nodule
and malignancy classifier)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def init_weights(model: nn.Module) -> None:
    """The book's initialisation: Kaiming normal weights (fan-out) and its normal(-b, b) biases."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Conv3d)):
            nn.init.kaiming_normal_(m.weight.data, a=0, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                _, fan_out = nn.init._calculate_fan_in_and_fan_out(m.weight.data)
                bound = 1 / math.sqrt(fan_out)
                nn.init.normal_(m.bias, -bound, bound)


class UNetConvBlock(nn.Module):
    def __init__(self, in_size: int, out_size: int, padding: bool, batch_norm: bool):
        super().__init__()
        block: list[nn.Module] = [nn.Conv2d(in_size, out_size, 3, padding=int(padding)), nn.ReLU()]
        if batch_norm:
            block.append(nn.BatchNorm2d(out_size))
        block += [nn.Conv2d(out_size, out_size, 3, padding=int(padding)), nn.ReLU()]
        if batch_norm:
            block.append(nn.BatchNorm2d(out_size))
        self.block = nn.Sequential(*block)

    def forward(self, x):
        return self.block(x)


class UNetUpBlock(nn.Module):
    def __init__(self, in_size: int, out_size: int, up_mode: str, padding: bool, batch_norm: bool):
        super().__init__()
        if up_mode == "upconv":
            self.up = nn.ConvTranspose2d(in_size, out_size, kernel_size=2, stride=2)
        elif up_mode == "upsample":
            self.up = nn.Sequential(nn.Upsample(mode="bilinear", scale_factor=2),
                                    nn.Conv2d(in_size, out_size, kernel_size=1))
        else:
            raise ValueError(f"up_mode must be 'upconv' or 'upsample', not {up_mode!r}")
        self.conv_block = UNetConvBlock(in_size, out_size, padding, batch_norm)

    @staticmethod
    def center_crop(layer, target_size):
        _, _, h, w = layer.shape
        dy, dx = (h - target_size[0]) // 2, (w - target_size[1]) // 2
        return layer[:, :, dy:dy + target_size[0], dx:dx + target_size[1]]

    def forward(self, x, bridge):
        up = self.up(x)
        return self.conv_block(torch.cat([up, self.center_crop(bridge, up.shape[2:])], 1))


class UNet(nn.Module):
    """Ronneberger's U-Net as the book uses it (after jvanvugt/pytorch-unet), with average
    pooling for down-sampling as in the book."""

    def __init__(self, in_channels=1, n_classes=2, depth=5, wf=6, padding=False,
                 batch_norm=False, up_mode="upconv"):
        super().__init__()
        self.depth = depth
        prev = in_channels
        self.down_path = nn.ModuleList()
        for i in range(depth):
            self.down_path.append(UNetConvBlock(prev, 2 ** (wf + i), padding, batch_norm))
            prev = 2 ** (wf + i)
        self.up_path = nn.ModuleList()
        for i in reversed(range(depth - 1)):
            self.up_path.append(UNetUpBlock(prev, 2 ** (wf + i), up_mode, padding, batch_norm))
            prev = 2 ** (wf + i)
        self.last = nn.Conv2d(prev, n_classes, kernel_size=1)

    def forward(self, x):
        bridges = []
        for i, down in enumerate(self.down_path):
            x = down(x)
            if i != len(self.down_path) - 1:
                bridges.append(x)
                x = F.avg_pool2d(x, 2)
        for i, up in enumerate(self.up_path):
            x = up(x, bridges[-i - 1])
        return self.last(x)


class UNetWrapper(nn.Module):
    """Input batch norm -> U-Net -> sigmoid. Input: (N, 7, H, W) HU clipped to [-1000, 1000],
    the slice and 3 neighbours on each side; H and W multiples of 2**(depth-1)."""

    def __init__(self, in_channels=7, n_classes=1, depth=3, wf=4, padding=True,
                 batch_norm=True, up_mode="upconv"):
        super().__init__()
        self.input_batchnorm = nn.BatchNorm2d(in_channels)
        self.unet = UNet(in_channels, n_classes, depth, wf, padding, batch_norm, up_mode)
        self.final = nn.Sigmoid()
        init_weights(self)

    @property
    def size_multiple(self) -> int:
        return 2 ** (self.unet.depth - 1)

    def forward(self, x):
        return self.final(self.unet(self.input_batchnorm(x)))


class LunaBlock(nn.Module):
    def __init__(self, in_channels: int, conv_channels: int):
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, conv_channels, kernel_size=3, padding=1, bias=True)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv3d(conv_channels, conv_channels, kernel_size=3, padding=1, bias=True)
        self.relu2 = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(2, 2)

    def forward(self, x):
        return self.maxpool(self.relu2(self.conv2(self.relu1(self.conv1(x)))))


class LunaModel(nn.Module):
    """The book's 3D classifier. Input (N, 1, 32, 48, 48) HU clipped to [-1000, 1000];
    returns (logits, softmax probabilities), class 1 = nodule (or malignant)."""

    def __init__(self, in_channels=1, conv_channels=8):
        super().__init__()
        self.tail_batchnorm = nn.BatchNorm3d(1)
        self.block1 = LunaBlock(in_channels, conv_channels)
        self.block2 = LunaBlock(conv_channels, conv_channels * 2)
        self.block3 = LunaBlock(conv_channels * 2, conv_channels * 4)
        self.block4 = LunaBlock(conv_channels * 4, conv_channels * 8)
        self.head_linear = nn.Linear(1152, 2)
        self.head_softmax = nn.Softmax(dim=1)
        init_weights(self)

    def forward(self, x):
        out = self.block4(self.block3(self.block2(self.block1(self.tail_batchnorm(x)))))
        logits = self.head_linear(out.flatten(1))
        return logits, self.head_softmax(logits)


ARCHITECTURES = {"UNetWrapper": UNetWrapper, "LunaModel": LunaModel}
