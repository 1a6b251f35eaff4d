"""Registry: every model trains one step at a small size, is seeded-deterministic, works channels_last; facts and CLI."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from models import create_feature_extractor, create_model, list_models, model_facts
from models.cbam import CBAM, cbam_param_count
from models.facts import activation_bytes, count_flops
from models.registry import get_spec
from protocols.errors import BadInput

CONTRACT = ["resnet50", "resnet50_cbam", "resnet50_cbam_post", "resnet50_cbam_woo",
            "vgg16", "densenet121", "efficientnet_b0", "vit_b_16"]
SIZE = 32  # smallest size every backbone takes (ViT-B/16: 2x2 patches)
# the registry's other forms, one of each library (timm's test_resnet is a 0.4 M-parameter ResNet)
EVERY_KIND = list_models() + ["timm/test_resnet", "tv/resnet18"]


def test_registry_names_match_contract():
    assert list_models() == CONTRACT


def _wake_zero_inits(model: nn.Module) -> None:
    """Documented zero inits block gradients upstream on step one: torchvision ViT's zero head, CBAM's zero
    spatial-BN weight (reference code), timm ResNet's zero last-BN per block. Give them non-zero values so
    every gradient can flow."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, CBAM):
                m.spatial.bn.weight.fill_(1.0)
            if isinstance(m, nn.BatchNorm2d) and m.weight is not None and not m.weight.any():
                m.weight.fill_(1.0)
        head = getattr(getattr(model, "heads", None), "head", None)
        if head is not None:
            head.weight.normal_(0, 0.02)


@pytest.mark.parametrize("name", EVERY_KIND)
def test_forward_backward_every_parameter(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=5, input_size=SIZE).train()
    _wake_zero_inits(model)
    x = torch.randn(2, 3, SIZE, SIZE)
    logits = model(x)
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()
    nn.functional.cross_entropy(logits, torch.tensor([0, 3])).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{pname} has an all-zero gradient"


def test_reference_zero_init_blocks_spatial_conv_grad_on_first_step():
    torch.manual_seed(0)
    model = create_model("resnet50_cbam", input_size=SIZE).train()
    nn.functional.cross_entropy(model(torch.randn(2, 3, SIZE, SIZE)), torch.tensor([1, 2])).backward()
    assert model.cbam2.spatial.conv.weight.grad.abs().sum() == 0  # gamma = 0 multiplies it out
    assert model.cbam2.spatial.bn.weight.grad.abs().sum() > 0  # ... but gamma itself learns


@pytest.mark.parametrize("name", EVERY_KIND)
def test_seeded_build_is_deterministic_and_channels_last_agrees(name):
    torch.manual_seed(123)
    a = create_model(name, input_size=SIZE).eval()
    torch.manual_seed(123)
    b = create_model(name, input_size=SIZE).eval()
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        ref = a(x)
        assert torch.equal(ref, a(x))
        b = b.to(memory_format=torch.channels_last)
        out = b(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_another_seed_gives_other_weights():
    torch.manual_seed(1)
    a = create_model("resnet50_cbam", input_size=SIZE).state_dict()
    torch.manual_seed(2)
    b = create_model("resnet50_cbam", input_size=SIZE).state_dict()
    assert not torch.equal(a["conv1.weight"], b["conv1.weight"])
    assert not torch.equal(a["cbam1.channel.mlp.0.weight"], b["cbam1.channel.mlp.0.weight"])


def test_vit_position_embeddings_follow_input_size():
    m = create_model("vit_b_16", input_size=48).eval()
    assert m.encoder.pos_embedding.shape == (1, 3 * 3 + 1, 768)
    with torch.no_grad():
        assert m(torch.randn(1, 3, 48, 48)).shape == (1, 5)


@pytest.mark.parametrize("name,size", [("vit_b_16", 40), ("resnet50", 16), ("resnet50", 64.0)])
def test_bad_input_size(name, size):
    with pytest.raises(BadInput, match="input_size"):
        create_model(name, input_size=size)


def test_unknown_name_lists_registry_and_the_other_forms():
    with pytest.raises(BadInput, match="resnet50_cbam_woo.*timm/<name>, tv/<name>, package.module:factory"):
        create_model("resnet51")


def _head_in_features(name: str) -> int:
    """Width of the registered classifier's input: what the feature extractor must return."""
    with torch.device("meta"):
        m = create_model(name, input_size=SIZE)
        return m.get_submodule(m.fibro_head).in_features


def test_head_widths_are_the_published_ones():
    assert {n: _head_in_features(n) for n in ("resnet50", "vgg16", "densenet121", "efficientnet_b0", "vit_b_16")} \
        == {"resnet50": 2048, "vgg16": 4096, "densenet121": 1024, "efficientnet_b0": 1280, "vit_b_16": 768}


@pytest.mark.parametrize("name", EVERY_KIND)
def test_feature_extractor_shapes(name):
    dim = _head_in_features(name)
    with torch.device("meta"):  # shapes only: cheap even for VGG-16
        fx, d = create_feature_extractor(name, input_size=SIZE)
        f = fx(torch.empty(3, 3, SIZE, SIZE))
    assert d == dim and not fx.training and fx.fibro_feature_dim == dim
    assert f.shape == (3, dim)
    assert not any(isinstance(m, nn.Linear) and m.out_features == 2 for m in fx.modules())


def test_feature_extractor_values_are_pooled_backbone_features():
    torch.manual_seed(0)
    fx, _ = create_feature_extractor("resnet50", input_size=SIZE)
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        f = fx(x)
        trunk = nn.Sequential(*list(fx.children())[:-2])  # conv1 .. layer4
        expected = trunk(x).mean(dim=(2, 3))
    torch.testing.assert_close(f, expected)


# --- facts: against torchvision's published parameter counts and operation counts -------------------

# registered models that are a torchvision architecture with only the head replaced
PLAIN_TORCHVISION = [n for n in list_models() if get_spec(n).arch == n] + ["tv/resnet18"]


@pytest.fixture(scope="module")
def facts224():
    return {n: model_facts(n, 224) for n in list_models() + ["tv/resnet18"]}


def test_resnet50_textbook_numbers(facts224):
    f = facts224["resnet50"]
    assert f["params_total"] == 23_518_277 == f["params_trainable"]
    assert abs(f["macs"] / 1e9 - 4.1) < 0.05  # ~4.1 GMACs at 224
    assert f["flops"] == 2 * f["macs"]


def test_plain_torchvision_models_are_found():
    assert {"resnet50", "vgg16", "densenet121", "efficientnet_b0", "vit_b_16"} <= set(PLAIN_TORCHVISION)


@pytest.mark.parametrize("name", PLAIN_TORCHVISION)
def test_facts_match_torchvision_metadata(facts224, name):
    """torchvision lists params and GFLOPS (= GMACs) for the 1000-class models; adjust for a 5-class head."""
    import torchvision.models as tvm

    weights, d = tvm.get_model_weights(get_spec(name).arch)["IMAGENET1K_V1"], _head_in_features(name)
    head_delta = (d * 1000 + 1000) - (d * 5 + 5)
    f = facts224[name]
    assert f["params_total"] == weights.meta["num_params"] - head_delta
    macs_1000 = (f["macs"] + d * (1000 - 5)) / 1e9
    assert macs_1000 == pytest.approx(weights.meta["_ops"], rel=2e-3)


def test_cbam_overhead_is_sum_of_cbam_params(facts224):
    base = facts224["resnet50"]["params_total"]
    for name, n_mod in [("resnet50_cbam", 4), ("resnet50_cbam_post", 16), ("resnet50_cbam_woo", 16)]:
        f = facts224[name]
        assert f["n_cbam_modules"] == n_mod
        assert f["params_total"] - base == f["params_cbam"] > 0
        with torch.device("meta"):
            model = create_model(name, input_size=SIZE)
        assert cbam_param_count(model) == f["params_cbam"]
    assert facts224["resnet50_cbam_post"]["params_cbam"] == facts224["resnet50_cbam_woo"]["params_cbam"]
    assert facts224["resnet50_cbam_post"]["params_cbam"] > facts224["resnet50_cbam"]["params_cbam"]


def test_flop_counter_counts_two_per_mac_and_activation_sum():
    lin = nn.Linear(10, 20, bias=False)
    assert count_flops(lin, torch.randn(1, 10)) == 2 * 10 * 20
    conv = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.ReLU())
    x = torch.randn(1, 3, 8, 8)
    assert count_flops(conv, x) == 2 * (4 * 8 * 8) * (3 * 3 * 3)
    assert activation_bytes(conv, x) == 2 * (4 * 8 * 8) * 4  # conv output + ReLU output, fp32


# --- CLI -----------------------------------------------------------------------------------------------

def test_cli_models_json(tmp_path, capsys):
    from bench.cli import main

    out = tmp_path / "facts.json"
    rc = main(["models", "--input-size", "64", "--models", "resnet50,resnet50_cbam", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "resnet50_cbam" in text and "+700,800" in text
    doc = json.loads(out.read_text())
    assert doc["schema"] == "fibrobench.models/1" and doc["input_size"] == 64
    assert set(doc["models"]) == {"resnet50", "resnet50_cbam"}
    cb = doc["models"]["resnet50_cbam"]
    with torch.device("meta"):
        expected = cbam_param_count(create_model("resnet50_cbam"))
    assert cb["added_params_vs_resnet50"] == cb["params_cbam"] == expected
    assert doc["provenance"]["command"][:2] == ["fibrobench", "models"]


def test_cli_models_bad_input(tmp_path, capsys):
    from bench.cli import main

    out = tmp_path / "facts.json"
    assert main(["models", "--models", "vit_b_16", "--input-size", "40", "--json", str(out)]) == 2
    assert "input_size" in capsys.readouterr().err
    assert not out.exists()


# --- GPU (skipped without CUDA) --------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("name", EVERY_KIND)
def test_gpu_bf16_channels_last_train_step_and_flops(name):
    """At 224 px on CUDA: one AdamW step under bf16 autocast in channels_last is finite and moves the
    weights; FlopCounterMode on real CUDA tensors gives the meta-device count used by model_facts."""
    torch.manual_seed(0)
    model = create_model(name, input_size=224).cuda().to(memory_format=torch.channels_last).train()
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(8, 3, 224, 224, device="cuda").contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 5, (8,), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    opt.step()
    assert any(not torch.equal(b, p.detach()) for b, p in zip(before, model.parameters()))
    model.eval()
    assert count_flops(model, x[:1]) == model_facts(name, 224)["flops"]


@pytest.mark.gpu
@pytest.mark.parametrize("name", EVERY_KIND)
def test_gpu_fp32_matches_cpu(name, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    torch.manual_seed(0)
    model = create_model(name, input_size=64).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        out = model.cuda()(x.cuda()).cpu()
    torch.testing.assert_close(out, ref, rtol=1e-3, atol=1e-4)
