"""The language-model flagship (configs/python_bytes_gpt.yaml) as a nanoGPT-style PyTorch program.

The same data (Python's standard library read as bytes, split by file with kd's split: the same
files for training and validation), model (nanoGPT's GPT: 4 layers, 4 heads, 128 wide, 128 bytes
of context, tied embeddings, no dropout), batch (32 windows), optimizer (AdamW, weight decay 0.1
on matrices and embeddings, warmup-cosine learning rate, gradient clipping at 1.0) and threads.
Windows are kd's (window i is bytes [128 i, 128 i + 129)), drawn in a fresh random order each
epoch. Prints one JSON line: tokens/s (median and range of the log intervals), the training loss
of the last interval, and the validation loss and bits per byte over the first 100 batches of 64
validation windows, which kd's eval reads in the same order; train_losses is the curve (the mean
loss of each log interval).

  python3 tests/bench/gpt_pytorch.py --threads 2 --steps 300 [--sdpa]
"""
import argparse
import glob
import json
import math
import statistics
import time

import torch
from torch import nn
from torch.nn import functional as F

V, BLOCK, C, H, L = 256, 128, 128, 4, 4
MASK64 = (1 << 64) - 1


def mix_bits(x):  # splitmix64's output function, as kd's data splits use it
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def split_files(files, test_fraction, seed, test):
    """kd's split_rows: Fisher-Yates with splitmix64, the first round(fraction * n) for test."""
    order, state = list(range(len(files))), seed
    for i in range(len(files) - 1, 0, -1):
        j = mix_bits(state) % (i + 1)
        state = (state + 0x9E3779B97F4A7C15) & MASK64
        order[i], order[j] = order[j], order[i]
    n_test = int(math.floor(test_fraction * len(files) + 0.5))
    kept = order[:n_test] if test else order[n_test:]
    return [files[i] for i in sorted(kept)]


def read_bytes(files):
    data = bytearray()
    for f in files:
        with open(f, 'rb') as fh:
            data += fh.read()
    return torch.frombuffer(data, dtype=torch.uint8).to(torch.long)


class LayerNorm(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.ones(n)), nn.Parameter(torch.zeros(n))

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):
    def __init__(self, sdpa):
        super().__init__()
        self.c_attn, self.c_proj, self.sdpa = nn.Linear(C, 3 * C), nn.Linear(C, C), sdpa
        self.register_buffer('mask', torch.tril(torch.ones(BLOCK, BLOCK)).view(1, 1, BLOCK, BLOCK) == 0)

    def forward(self, x):
        B, T, _ = x.size()
        q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in self.c_attn(x).split(C, dim=2))
        if self.sdpa:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
            y = F.softmax(att.masked_fill(self.mask[:, :, :T, :T], float('-inf')), dim=-1) @ v
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class Block(nn.Module):
    def __init__(self, sdpa):
        super().__init__()
        self.ln_1, self.attn, self.ln_2 = LayerNorm(C), CausalSelfAttention(sdpa), LayerNorm(C)
        self.mlp = nn.Sequential(nn.Linear(C, 4 * C), nn.GELU(), nn.Linear(4 * C, C))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, sdpa):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(V, C), nn.Embedding(BLOCK, C)
        self.h = nn.ModuleList([Block(sdpa) for _ in range(L)])
        self.ln_f = LayerNorm(C)
        for name, p in self.named_parameters():  # nanoGPT's initialisation
            if name.endswith('bias'):
                nn.init.zeros_(p)
            elif p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * L) if name.endswith(('attn.c_proj.weight', 'mlp.2.weight')) else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.size(1)))
        for block in self.h:
            x = block(x)
        return F.linear(self.ln_f(x), self.wte.weight)  # tied


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--steps', type=int, default=2000)
    ap.add_argument('--log-every', type=int, default=100)
    ap.add_argument('--sdpa', action='store_true', help='F.scaled_dot_product_attention (PyTorch 2), as nanoGPT')
    ap.add_argument('--files', default='/usr/lib/python3.*/*.py')
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    files = sorted(glob.glob(args.files))
    train = read_bytes(split_files(files, 0.1, 0, test=False))
    val = read_bytes(split_files(files, 0.1, 0, test=True))
    windows = (train.numel() - 1) // BLOCK
    offsets = torch.arange(BLOCK + 1)

    model = GPT(args.sdpa)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{'params': decay, 'weight_decay': 0.1}, {'params': no_decay, 'weight_decay': 0.0}],
                            lr=2e-3)

    def lr_at(step):  # optax's warmup_cosine_decay_schedule(0, 2e-3, 100, 2000, 1e-4)
        if step < 100:
            return 2e-3 * step / 100
        t = min(1.0, (step - 100) / 1900)
        return 1e-4 + (2e-3 - 1e-4) * 0.5 * (1 + math.cos(math.pi * t))

    order, position = torch.randperm(windows), 0
    rates, interval_losses, curve = [], [], []
    t0 = time.perf_counter()
    for step in range(args.steps):
        if position + 32 > windows:
            order, position = torch.randperm(windows), 0
        starts = order[position:position + 32] * BLOCK
        position += 32
        chunk = train[starts[:, None] + offsets]
        x, y = chunk[:, :-1], chunk[:, 1:]
        for g in opt.param_groups:
            g['lr'] = lr_at(step)
        loss = F.cross_entropy(model(x).view(-1, V), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        interval_losses.append(loss.item())
        if (step + 1) % args.log_every == 0:
            t1 = time.perf_counter()
            rates.append(args.log_every * 32 * BLOCK / (t1 - t0))
            curve.append(round(sum(interval_losses) / len(interval_losses), 4))
            interval_losses = []
            t0 = time.perf_counter()

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for b in range(100):
            starts = torch.arange(b * 64, (b + 1) * 64) * BLOCK
            if starts[-1] + BLOCK + 1 > val.numel():
                break
            chunk = val[starts[:, None] + offsets]
            total += F.cross_entropy(model(chunk[:, :-1]).reshape(-1, V), chunk[:, 1:].reshape(-1),
                                     reduction='sum').item()
            count += chunk[:, 1:].numel()
    print(json.dumps({'program': 'pytorch ' + torch.__version__ + (' sdpa' if args.sdpa else ''),
                      'threads': args.threads, 'steps': args.steps,
                      'tokens_per_sec': statistics.median(rates), 'tokens_per_sec_min': min(rates),
                      'tokens_per_sec_max': max(rates), 'train_loss': curve[-1], 'train_losses': curve, 'val_loss': total / count,
                      'val_bits_per_byte': total / count / math.log(2)}))


if __name__ == '__main__':
    main()
