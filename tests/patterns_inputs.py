"""Small in-repo models for what users name and feed: Hugging Face-style keyword inputs, names that would break
generated code, and an integer input with no elements. Factories return (module, inputs[, kwargs]) for
``file.py:factory``."""

from __future__ import annotations

import torch
from torch import nn


class KeywordModel(nn.Module):
    """A Hugging Face-style forward: keyword tensors, optional ones, flags, and a dict output."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(100, 16)
        self.proj = nn.Linear(16, 16)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, token_type_ids: None = None,
                return_dict: bool = False) -> object:
        h = self.proj(self.emb(input_ids))
        if attention_mask is not None:
            h = h * attention_mask[..., None]
        return {"last_hidden_state": h} if return_dict else h


def keyword_inputs():
    torch.manual_seed(0)
    ids = torch.randint(0, 100, (2, 8))
    mask = torch.ones(2, 8)
    mask[1, 6:] = 0
    return KeywordModel().eval(), (), {"input_ids": ids, "attention_mask": mask, "token_type_ids": None, "return_dict": True}


def keyword_inputs_positional_none():
    m, _, kw = keyword_inputs()
    return m, (kw["input_ids"], None)


class OddNames(nn.Module):
    """Module names a real model may carry (nn.ModuleDict keys, add_module): markup, terminal escapes,
    spreadsheet formulas, '@' (which export uses for repeated calls)."""

    NAMES = ("=SUM(1+1)", "@x", "[/]", "[link=http:e-vil]click[/link]", "\x1b[31mred\x1b]8;;http:e-vil\x07", "x@y")

    def __init__(self) -> None:
        super().__init__()
        for i, name in enumerate(self.NAMES):
            self.add_module(name, nn.Linear(4, 4) if i % 2 == 0 else nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for m in self.children():
            x = m(x)
        return x


def odd_names():
    return OddNames(), (torch.randn(2, 4),)


class QuotedName(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleDict({'a"b': nn.Linear(4, 4)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks['a"b'](x)


def quoted_name():
    return QuotedName(), (torch.randn(2, 4),)


class _EmptyIds(nn.Module):
    """A decoder step with no cached tokens yet: an integer input with zero elements (issue 25)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 16)
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor, past_ids: torch.Tensor) -> torch.Tensor:
        return self.fc(x + self.emb(past_ids).sum(1))


def empty_int_input():
    return _EmptyIds(), (torch.randn(2, 16), torch.zeros(2, 0, dtype=torch.long))
