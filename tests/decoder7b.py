"""A Llama-2-7B-shaped decoder (32 layers, d 4096, FFN 11008, 32 heads, vocab 32000) built on the meta
device: the shapes of 6.7 B parameters and not one byte of them. For the static-profile test."""

import torch
import torch.nn.functional as F
from torch import nn

D, FFN, HEADS, LAYERS, VOCAB, SEQ = 4096, 11008, 32, 32, 32000, 128


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn_norm, self.ffn_norm = nn.RMSNorm(D), nn.RMSNorm(D)
        self.q, self.k, self.v, self.o = (nn.Linear(D, D, bias=False) for _ in range(4))
        self.gate, self.up = nn.Linear(D, FFN, bias=False), nn.Linear(D, FFN, bias=False)
        self.down = nn.Linear(FFN, D, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        h = self.attn_norm(x)
        q, k, v = (p(h).view(b, s, HEADS, D // HEADS).transpose(1, 2) for p in (self.q, self.k, self.v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, s, D)
        x = x + self.o(a)
        h = self.ffn_norm(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class Decoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, D)
        self.layers = nn.Sequential(*(Block() for _ in range(LAYERS)))
        self.norm = nn.RMSNorm(D)
        self.lm_head = nn.Linear(D, VOCAB, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.norm(self.layers(self.embed(ids))))


def build():
    with torch.device("meta"):
        return Decoder().eval(), (torch.zeros(1, SEQ, dtype=torch.long),)
