"""The three nets: fc1 sizes derived from the image size, output shapes, metadata in the weights."""
from __future__ import annotations

import pytest
import torch

import hw4

CLASSES = ("airplane", "bus", "cat", "dog", "pizza")


@pytest.mark.parametrize("size, expected", [
    (64, {"net1": 6272, "net2": 8192, "net3": 6272}),
    (60, {"net1": 5408, "net2": 7200, "net3": 5408}),
])
def test_fc1_sizes_and_output_shapes(size, expected):
    for name, fc1_in in expected.items():
        net = hw4.build_net(name, size, CLASSES)
        assert net.fc1.in_features == fc1_in
        out = net(torch.rand(3, 3, size, size))  # a wrong fc1 size would raise here
        assert out.shape == (3, len(CLASSES))


def test_architectures_match_the_exercise():
    net1, net2, net3 = (hw4.build_net(n, 64, CLASSES) for n in hw4.NET_NAMES)
    assert (net1.conv1.padding, net2.conv1.padding, net2.conv2.padding) == ((0, 0), (1, 1), (1, 1))
    assert len(net1.conv_chain) == 0 and len(net2.conv_chain) == 0 and len(net3.conv_chain) == 10
    for conv in net3.conv_chain:
        assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.padding) == (32, 32, (3, 3), (1, 1))
    assert net3.watched_weights()[1] is net3.conv_chain[-1].weight
    assert net1.watched_weights()[1] is net1.conv2.weight
    assert hw4.build_net("net1", 64, ("a", "b", "c")).fc2.out_features == 3


def test_weights_carry_their_metadata(tmp_path):
    net = hw4.build_net("net2", 60, CLASSES)
    torch.save(net.state_dict(), tmp_path / "w.pt")
    state = torch.load(tmp_path / "w.pt", weights_only=True)
    assert state["_extra_state"] == {"net": "net2", "image_size": 60, "classes": list(CLASSES)}
    again = hw4.build_net("net2", 60, CLASSES)
    again.load_state_dict(state)
    x = torch.rand(2, 3, 60, 60)
    assert torch.equal(again(x), net(x))


def test_too_small_image_size_is_a_user_error():
    with pytest.raises(hw4.UserError, match="too small"):
        hw4.fc1_in_features(5, 0)


def test_net_table_is_printed(capsys):
    hw4.print_net_table(hw4.NET_NAMES, 64, CLASSES)
    out = capsys.readouterr().out
    assert "6272" in out and "8192" in out and "406,885" in out
