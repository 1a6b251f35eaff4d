"""Benchmarks: one training step of a small CNN, and batch-1 inference, on CPU (fp32, 64 px)."""
from __future__ import annotations

import pytest
import torch
import torchvision


@pytest.fixture
def small_model():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=5)


def test_bench_train_step_resnet18_b16_64px(benchmark, small_model):
    model = small_model.train()
    x = torch.randn(16, 3, 64, 64)
    y = torch.randint(0, 5, (16,))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss.item()

    loss = benchmark(step)
    assert loss == loss and loss > 0                   # finite, positive


def test_bench_infer_resnet18_b1_64px(benchmark, small_model):
    model = small_model.eval()
    x = torch.randn(1, 3, 64, 64)

    def infer():
        with torch.inference_mode():
            return model(x)

    assert benchmark(infer).shape == (1, 5)
