"""The net table and HW4Net: fc1 sizes measured from the layers, output shapes, variants, metadata."""
from __future__ import annotations

import pytest
import torch

import hw4

CLASSES = ("airplane", "bus", "cat", "dog", "pizza")


@pytest.mark.parametrize("size, expected", [
    (64, {"net1": 6272, "net2": 8192, "net3": 6272, "net3bn": 6272, "net3res": 6272, "net2aug": 8192}),
    (60, {"net1": 5408, "net2": 7200, "net3": 5408}),
])
def test_fc1_sizes_and_output_shapes(size, expected):
    for name, fc1_in in expected.items():
        net = hw4.build_net(name, size, CLASSES)
        assert net.fc1.in_features == fc1_in
        out = net(torch.rand(3, 3, size, size))  # a wrong fc1 size would raise here
        assert out.shape == (3, len(CLASSES))


def test_fc1_follows_the_channels_of_a_new_variant():
    net = hw4.build_net("wide", 64, CLASSES, hw4.NetSpec("Wide", channels=(8, 48)))
    assert net.fc1.in_features == 48 * 14 * 14
    assert net(torch.rand(2, 3, 64, 64)).shape == (2, 5)


def test_architectures_match_the_exercise():
    net1, net2, net3 = (hw4.build_net(n, 64, CLASSES) for n in hw4.DEFAULT_NETS)
    assert (net1.conv1.padding, net2.conv1.padding, net2.conv2.padding) == ((0, 0), (1, 1), (1, 1))
    assert len(net1.conv_chain) == 0 and len(net2.conv_chain) == 0 and len(net3.conv_chain) == 10
    for block in net3.conv_chain:
        conv = block.conv
        assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.padding) == (32, 32, (3, 3), (1, 1))
        assert block.bn is None and not block.residual
    assert net3.watched_weights()[1] is net3.conv_chain[-1].conv.weight
    assert net1.watched_weights()[1] is net1.conv2.weight
    assert hw4.build_net("net1", 64, ("a", "b", "c")).fc2.out_features == 3
    assert net3.relu_layers() == ["conv1", "conv2", *(f"chain{k}" for k in range(1, 11)), "fc1"]


def test_bn_and_residual_blocks():
    bn, res = hw4.build_net("net3bn", 64, CLASSES), hw4.build_net("net3res", 64, CLASSES)
    assert all(isinstance(b.bn, torch.nn.BatchNorm2d) and b.conv.bias is None for b in bn.conv_chain)
    block = res.conv_chain[0]
    assert block.residual
    with torch.no_grad():
        block.conv.weight.zero_()
        block.conv.bias.zero_()
    x = torch.rand(2, 32, 8, 8)
    assert torch.equal(block(x), x), "with a zero conv a residual block passes its (non-negative) input on"
    # building a BN net must not touch its running statistics (fc1 is measured in eval mode)
    assert all(torch.equal(b.bn.running_mean, torch.zeros(32)) for b in bn.conv_chain)


def test_weights_carry_their_metadata(tmp_path):
    net = hw4.build_net("net2", 60, CLASSES)
    torch.save(net.state_dict(), tmp_path / "w.pt")
    state = torch.load(tmp_path / "w.pt", weights_only=True)
    meta = state["_extra_state"]
    assert (meta["net"], meta["image_size"], meta["classes"]) == ("net2", 60, list(CLASSES))
    assert meta["spec"]["padding"] == 1 and hw4.spec_from_meta(meta) == hw4.NETS["net2"]
    again = hw4.build_net("net2", 60, CLASSES)
    again.load_state_dict(state)
    x = torch.rand(2, 3, 60, 60)
    assert torch.equal(again(x), net(x))


def test_too_small_image_size_is_a_user_error():
    with pytest.raises(hw4.UserError, match="too small"):
        hw4.build_net("net1", 5, CLASSES)


def test_net_table_is_printed(capsys):
    hw4.print_net_table(hw4.DEFAULT_NETS, 64, CLASSES)
    out = capsys.readouterr().out
    assert "6272" in out and "8192" in out and "406,885" in out


def test_to_input_scales_like_totensor():
    x = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 3, 1, 1).expand(2, 3, 4, 4)
    y = hw4.to_input(x)
    assert y.dtype == torch.float32 and y.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(y[0, :, 0, 0], torch.tensor([0.0, 0.2, 1.0]))
