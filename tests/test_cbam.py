"""CBAM against Woo et al. Eq. (2)-(3) computed independently in numpy, and the three placements in ResNet-50."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from models.cbam import CBAM, cbam_modules, cbam_param_count
from models.resnet_cbam import BottleneckCBAMPost, BottleneckCBAMWoo, resnet50_cbam


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _conv2d_same(img, w, b):
    """Cross-correlation of img [Cin,H,W] with w [1,Cin,k,k], zero padding k//2, by explicit shifts."""
    cin, h, wd = img.shape
    k = w.shape[-1]
    p = k // 2
    padded = np.zeros((cin, h + 2 * p, wd + 2 * p))
    padded[:, p:p + h, p:p + wd] = img
    out = np.full((h, wd), b)
    for c in range(cin):
        for i in range(k):
            for j in range(k):
                out += w[0, c, i, j] * padded[c, i:i + h, j:j + wd]
    return out


def _reference_cbam(x, m: CBAM):
    """Eq. (2) then Eq. (3) with the module's weights, in float64 numpy (eval-mode BatchNorm)."""
    l0, l1 = m.channel.mlp[0], m.channel.mlp[2]
    w0, w1 = l0.weight.detach().double().numpy(), l1.weight.detach().double().numpy()
    b0 = l0.bias.detach().double().numpy() if l0.bias is not None else 0.0
    b1 = l1.bias.detach().double().numpy() if l1.bias is not None else 0.0

    def mlp(v):
        return w1 @ np.maximum(w0 @ v + b0, 0.0) + b1

    conv = m.spatial.conv
    cw = conv.weight.detach().double().numpy()
    cb = float(conv.bias.detach()) if conv.bias is not None else 0.0
    out = np.empty_like(x)
    for n in range(x.shape[0]):
        f = x[n]
        mc = _sigmoid(mlp(f.mean(axis=(1, 2))) + mlp(f.max(axis=(1, 2))))  # Eq. (2)
        f1 = mc[:, None, None] * f
        pooled = np.stack([f1.mean(axis=0), f1.max(axis=0)])  # [avg; max] along channels
        z = _conv2d_same(pooled, cw, cb)
        if isinstance(m.spatial.bn, nn.BatchNorm2d):
            bn = m.spatial.bn
            z = (z - float(bn.running_mean)) / np.sqrt(float(bn.running_var) + bn.eps) * float(bn.weight.detach()) + float(bn.bias.detach())
        out[n] = _sigmoid(z)[None] * f1  # Eq. (3)
    return out


@pytest.mark.parametrize("mlp_bias,spatial_bn", [(True, True), (False, False), (False, True)])
def test_cbam_matches_equations(mlp_bias, spatial_bn):
    torch.manual_seed(0)
    m = CBAM(32, reduction=16, mlp_bias=mlp_bias, spatial_bn=spatial_bn).double().eval()
    with torch.no_grad():  # move every parameter and BN statistic off its init so each term matters
        for p in m.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
        if spatial_bn:
            m.spatial.bn.running_mean.fill_(0.3)
            m.spatial.bn.running_var.fill_(2.0)
    x = torch.randn(2, 32, 5, 6, dtype=torch.float64)
    got = m(x).detach().numpy()
    np.testing.assert_allclose(got, _reference_cbam(x.numpy(), m), rtol=1e-10, atol=1e-12)


def test_pooled_map_order_is_avg_then_max():
    """Zeroing the conv's 'max' input channel must leave a gate that depends on the channel mean only."""
    m = CBAM(8, reduction=4, spatial_bn=False).eval()
    with torch.no_grad():
        m.spatial.conv.weight.zero_()
        m.spatial.conv.weight[0, 0, 3, 3] = 1.0  # centre tap on input channel 0
        m.spatial.conv.bias.zero_()
    f = torch.randn(1, 8, 4, 4)
    np.testing.assert_allclose(m.spatial.gate(f).detach().numpy(),
                               torch.sigmoid(f.mean(1, keepdim=True)).numpy(), rtol=1e-6)


def test_matches_timm_cbam_with_same_weights():
    """timm's CbamModule (bias-free MLP, BN after the 7x7 conv) agrees once weights are copied over."""
    from timm.layers.cbam import CbamModule

    torch.manual_seed(1)
    ours = CBAM(64, reduction=16, mlp_bias=False, spatial_bn=True).eval()
    theirs = CbamModule(64, rd_ratio=1 / 16, mlp_bias=False).eval()
    with torch.no_grad():
        for p in ours.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
        theirs.channel.fc1.weight.copy_(ours.channel.mlp[0].weight[:, :, None, None])
        theirs.channel.fc2.weight.copy_(ours.channel.mlp[2].weight[:, :, None, None])
        theirs.spatial.conv.conv.weight.copy_(ours.spatial.conv.weight)
        theirs.spatial.conv.bn.weight.copy_(ours.spatial.bn.weight)
        theirs.spatial.conv.bn.bias.copy_(ours.spatial.bn.bias)
    x = torch.randn(2, 64, 7, 7)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-6)


def test_reference_init_spatial_gate_starts_at_one_half():
    m = CBAM(16)
    assert all(bool((l.bias == 0).all()) for l in (m.channel.mlp[0], m.channel.mlp[2]))
    x = torch.randn(3, 16, 6, 6)
    for mode in (m.train(), m.eval()):
        torch.testing.assert_close(mode.spatial.gate(x), torch.full((3, 1, 6, 6), 0.5))
    # with BN weight 1 (timm / PyTorch default) the gate varies over space
    assert CBAM(16, zero_init_spatial_bn=False).eval().spatial.gate(x).std() > 0


@pytest.mark.parametrize("c,r", [(256, 16), (2048, 16), (32, 8)])
def test_param_count_formula(c, r):
    hidden = c // r
    expected = (c * hidden + hidden) + (hidden * c + c) + 2 * 7 * 7 + 2  # MLP with bias, conv, BN
    assert cbam_param_count(nn.Sequential(CBAM(c, r))) == expected
    assert cbam_param_count(nn.Sequential(CBAM(c, r, mlp_bias=False, spatial_bn=False))) \
        == 2 * c * hidden + 2 * 7 * 7 + 1


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    return {p: resnet50_cbam(p).eval() for p in ("stage", "post", "woo")}


def test_module_counts_and_channels(nets):
    expected_counts = {"stage": 4, "post": 16, "woo": 16}
    for p, net in nets.items():
        mods = cbam_modules(net)
        assert len(mods) == expected_counts[p]
        chans = [m.channels for _, m in mods]
        if p == "stage":
            assert [n for n, _ in mods] == ["cbam1", "cbam2", "cbam3", "cbam4"]
            assert chans == [256, 512, 1024, 2048]
        else:
            assert chans == [256] * 3 + [512] * 4 + [1024] * 6 + [2048] * 3
            assert all(n.endswith(".cbam") for n, _ in mods)


def test_stage_cbam_follows_each_stage_output(nets):
    net = nets["stage"]
    order, seen = [], {}

    def rec(name):
        def hook(_m, inp, out):
            order.append(name)
            seen[name] = (inp[0].detach().clone(), out.detach().clone())
        return hook

    names = [f"layer{i}" for i in range(1, 5)] + [f"cbam{i}" for i in range(1, 5)]
    handles = [getattr(net, n).register_forward_hook(rec(n)) for n in names]
    with torch.no_grad():
        net(torch.randn(2, 3, 64, 64))
    for h in handles:
        h.remove()
    assert order == ["layer1", "cbam1", "layer2", "cbam2", "layer3", "cbam3", "layer4", "cbam4"]
    for i in range(1, 5):
        assert torch.equal(seen[f"cbam{i}"][0], seen[f"layer{i}"][1])  # CBAM reads the stage output
        if i < 4:
            assert torch.equal(seen[f"layer{i + 1}"][0], seen[f"cbam{i}"][1])  # next stage reads CBAM
    assert (seen["cbam1"][0] >= 0).all()  # stage outputs are post-ReLU


@pytest.mark.parametrize("placement,block_name", [("woo", "layer2.0"), ("woo", "layer2.1"),
                                                  ("post", "layer2.0"), ("post", "layer3.2")])
def test_block_cbam_position_relative_to_add(nets, placement, block_name):
    net = nets[placement]
    block = net.get_submodule(block_name)
    assert isinstance(block, BottleneckCBAMWoo if placement == "woo" else BottleneckCBAMPost)
    cap = {}

    def keep(key, which):
        def hook(_m, inp, out):
            cap[key] = (inp[0] if which == "in" else out).detach().clone()
        return hook

    hs = [block.bn3.register_forward_hook(keep("bn3", "out")),
          block.cbam.register_forward_hook(keep("cbam_in", "in")),
          block.cbam.register_forward_hook(keep("cbam_out", "out")),
          block.register_forward_hook(keep("block_in", "in")),
          block.register_forward_hook(keep("block_out", "out"))]
    with torch.no_grad():
        net(torch.randn(2, 3, 64, 64))
        shortcut = block.shortcut(cap["block_in"])
    for h in hs:
        h.remove()
    if placement == "woo":  # y = ReLU(CBAM(F(x)) + x)
        torch.testing.assert_close(cap["cbam_in"], cap["bn3"])
        torch.testing.assert_close(cap["block_out"], torch.relu(cap["cbam_out"] + shortcut))
    else:  # y = ReLU(CBAM(F(x) + x)): CBAM sees the pre-ReLU residual sum
        torch.testing.assert_close(cap["cbam_in"], cap["bn3"] + shortcut)
        torch.testing.assert_close(cap["block_out"], torch.relu(cap["cbam_out"]))
        assert (cap["cbam_in"] < 0).any()


def test_cbam_init_survives_resnet_init_loop(nets):
    for net in nets.values():
        for _, m in cbam_modules(net):
            assert bool((m.spatial.bn.weight == 0).all())
            assert bool((m.channel.mlp[0].bias == 0).all())
