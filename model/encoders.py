"""Image encoders: torchvision ResNets without the classification head.

`ResNetEncoder(arch, in_channels, width, pretrained)` maps an already-normalised image
(B, in_channels, H, W) float32 to a feature vector (B, feature_dim) by global average pooling the last
stage. It is torchvision's ResNet (same blocks, same layer counts, same weight initialisation) with
two knobs added for FuseMesh:

- `in_channels`: 3 for the RGB stream, 1 for the depth stream (only the first conv changes);
- `width`: channels of the first stage (64 = torchvision's network, 32 = "half width", used by the
  `lite` preset to fit a 2-core CPU).

`pretrained=True` loads torchvision's ImageNet weights (downloads once into torch's cache, so it needs
a network connection; only width 64 has them). For a 1-channel input the first conv's RGB filters are
summed, the usual way to reuse them for a single-channel image. Nothing downloads by default.
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet as tv_resnet

# arch -> (block, blocks per stage)
RESNET_ARCHS: dict[str, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    "resnet18": (tv_resnet.BasicBlock, (2, 2, 2, 2)),
    "resnet34": (tv_resnet.BasicBlock, (3, 4, 6, 3)),
    "resnet50": (tv_resnet.Bottleneck, (3, 4, 6, 3)),
}


def adapt_classifier_state(state: dict[str, torch.Tensor], in_channels: int) -> dict[str, torch.Tensor]:
    """A torchvision ResNet classifier's state dict -> this encoder's: drop `fc.*`; for 1 input channel
    sum conv1's RGB filters (a grey image then gives the response the RGB filters give to grey), for
    other counts spread their mean over the channels."""
    out = {k: v for k, v in state.items() if not k.startswith("fc.")}
    w = out["conv1.weight"]
    if in_channels == 1:
        out["conv1.weight"] = w.sum(dim=1, keepdim=True)
    elif in_channels != 3:
        out["conv1.weight"] = w.mean(dim=1, keepdim=True).repeat(1, in_channels, 1, 1)
    return out


class ResNetEncoder(tv_resnet.ResNet):
    """torchvision ResNet-18/34/50 trunk: (B, in_channels, H, W) normalised image -> (B, feature_dim).

    feature_dim = 8 * width * block.expansion (512 for ResNet-18/34, 2048 for ResNet-50 at width 64).
    """

    def __init__(self, arch: str = "resnet50", in_channels: int = 3, width: int = 64,
                 pretrained: bool = False) -> None:
        if arch not in RESNET_ARCHS:
            raise ValueError(f"unknown encoder arch {arch!r}; expected one of {sorted(RESNET_ARCHS)}")
        if in_channels < 1 or width < 1:
            raise ValueError(f"in_channels and width must be positive, got {in_channels}, {width}")
        if pretrained and width != 64:
            raise ValueError(f"pretrained ImageNet weights exist only for width 64, got width={width}")
        block, layers = RESNET_ARCHS[arch]
        super().__init__(block, list(layers))  # builds torchvision's network at width 64 ...
        self.arch, self.in_channels, self.width = arch, in_channels, width
        if width != 64:
            self._rebuild(block, layers, in_channels, width)  # ... then resizes it, same recipe
        elif in_channels != 3:
            self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.fc = nn.Identity()  # no classification head
        self.feature_dim = 8 * width * block.expansion
        if pretrained:
            self._load_imagenet(arch)

    def _rebuild(self, block: type[nn.Module], layers: tuple[int, ...], in_channels: int, width: int) -> None:
        """Re-create the trunk with `width` base channels and `in_channels` inputs (torchvision's init)."""
        self.inplanes = width
        self.dilation = 1
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, 2 * width, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 4 * width, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 8 * width, layers[3], stride=2)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _load_imagenet(self, arch: str) -> None:
        """Load torchvision's ImageNet weights (network access on first use)."""
        weights = tv_resnet.__dict__[{"resnet18": "ResNet18_Weights", "resnet34": "ResNet34_Weights",
                                      "resnet50": "ResNet50_Weights"}[arch]].DEFAULT
        self.load_state_dict(adapt_classifier_state(weights.get_state_dict(progress=False), self.in_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, H, W) normalised image -> (B, feature_dim) globally pooled features."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)
