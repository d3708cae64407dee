"""LoRA adapters on the TAVR transformer: a no-op at start, trainable alone, switchable, mergeable."""

import torch
from torch import nn

from tavr.config import ModelConfig
from tavr.models.transformer import TAVRTransformer3DModel
from tavr.rl import lora


def _inputs(cfg: ModelConfig):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, cfg.in_channels, 2, 4, 4, generator=g)
    return dict(hidden_states=x, timestep=torch.tensor([500.0]), encoder_hidden_states=torch.randn(1, 3, cfg.text_dim, generator=g),
                reference=torch.randn(1, cfg.in_channels, 2, 4, 4, generator=g))  # fmt: skip


def test_lora_trains_only_adapters_and_merges_to_the_same_function():
    cfg = ModelConfig(num_layers=2)
    torch.manual_seed(0)
    model = TAVRTransformer3DModel(cfg)
    inputs = _inputs(cfg)
    base = model(**inputs).detach()
    wrapped = lora.add_lora(model, rank=4, alpha=4)
    assert wrapped and all(name.startswith("blocks.") for name in wrapped)
    assert torch.equal(model(**inputs), base)  # B = 0: unchanged
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)

    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(**inputs).pow(2).mean().backward()
    opt.step()
    adapted = model(**inputs).detach()
    assert not torch.allclose(adapted, base)
    with lora.lora_disabled(model):
        assert torch.allclose(model(**inputs), base)  # the base model, for the KL reference
    assert torch.allclose(model(**inputs), adapted)  # switched back on

    lora.merge_lora(model)
    assert not any(isinstance(m, lora.LoRALinear) for m in model.modules())
    assert all(type(m) is nn.Linear for n, m in model.named_modules() if n in wrapped)
    assert torch.allclose(model(**inputs), adapted, atol=1e-5)
    assert set(model.state_dict()) == set(TAVRTransformer3DModel(cfg).state_dict())  # saves like a plain model
