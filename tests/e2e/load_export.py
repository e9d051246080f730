"""Loads kd's export of the flagship MLP into a PyTorch nn.Module, as README shows, and prints
its logits for a fixed input.

  load_export.py FILE safetensors|torch  ->  a JSON list of 2 rows of 10 logits on stdout

load_state_dict is strict: every name and shape of the file must be the module's. Used by kd's
end-to-end tests, with Debian's python3-torch (and PyPI's safetensors) in the tests' venv.
"""
import json
import sys

import torch
from torch import nn


class MLP(nn.Module):
    """kd's MLP (configs/fashion_mnist_mlp.yaml): 784-512-256-10 with ReLU."""

    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
                                    nn.Linear(256, 10))

    def forward(self, x):
        return self.layers(x.flatten(1))


def main(path, file_format):
    if file_format == "safetensors":
        from safetensors.torch import load_file
        state = load_file(path)
    else:
        state = torch.load(path)
    model = MLP()
    model.load_state_dict(state)
    x = torch.linspace(0, 1, 2 * 784).reshape(2, 784)
    with torch.no_grad():
        print(json.dumps(model(x).tolist()))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
