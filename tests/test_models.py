"""The net table and HW4Net: fc1 sizes measured from the layers, output shapes, variants, metadata."""
from __future__ import annotations


import pytest
import torch

import hw4
import hw4_records
import hw4_report

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


@pytest.mark.parametrize("size", [10, 33, 64])
def test_the_parameter_count_from_a_spec_is_the_built_nets(size):
    """predict sizes an untrusted net from its spec alone; the count must be the real one for every net."""
    specs = {**hw4.NETS, "odd": hw4.NetSpec("Odd", padding=2, channels=(5, 7), extra_convs=3, block="bn",
                                            hidden=(11, 13))}
    for name, spec in specs.items():
        net = hw4.build_net(name, size, "abcd", spec)
        assert hw4.spec_parameter_count(spec, size, 4) == hw4.count_parameters(net)
        assert hw4_records.spec_conv_output_size(spec, size) == net.fc1.in_features  # what the report reads
    with pytest.raises(ValueError, match="does not fit its 9x9 pictures"):
        hw4.spec_parameter_count(hw4.NETS["net1"], 9, 5)


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
    taps = {}
    net3(torch.rand(1, 3, 64, 64), taps)
    assert list(taps) == ["conv1", "conv2", *(f"chain{k}" for k in range(1, 11)), "fc1"]


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
    assert meta["spec"]["padding"] == 1 and meta["spec"]["label"] == "Net2"
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


def test_to_input_is_exactly_totensor_scaling():
    import torchvision.transforms.functional as TF

    values = torch.arange(256, dtype=torch.uint8)
    x = values.view(1, 1, 16, 16).expand(2, 3, 16, 16)
    y = hw4.to_input(x)
    assert y.dtype == torch.float32 and y.is_contiguous(memory_format=torch.channels_last)
    image = values.view(16, 16, 1).expand(16, 16, 3).numpy()
    assert torch.equal(y[0], TF.to_tensor(image)), "bit for bit what torchvision's ToTensor gives"
    assert torch.equal(y, hw4.unit_scale(torch.device("cpu"))[x.int()]), "and what the table gives on CUDA"


def test_dropout_variant_drops_only_while_training():
    net = hw4.build_net("net1drop", 32, CLASSES)
    x = torch.rand(2, 3, 32, 32)
    net.eval()
    assert torch.equal(net(x), net(x)), "no dropout in eval mode"
    net.train()
    torch.manual_seed(0)
    a = net(x)
    torch.manual_seed(0)
    assert torch.equal(a, net(x)) and not torch.equal(a, net(x)), "dropout draws from the seeded global RNG"
    plain = hw4.build_net("net1", 32, CLASSES).train()
    state = torch.get_rng_state()
    plain(x)
    assert torch.equal(state, torch.get_rng_state()), "a net without dropout draws nothing"


def test_initialisation_and_fc_variants():
    torch.manual_seed(0)
    he, xavier = hw4.build_net("net3he", 64, CLASSES), hw4.build_net("net3xavier", 64, CLASSES)
    fan_in = 32 * 9
    for block in he.conv_chain:
        assert abs(block.conv.weight.std().item() - (2 / fan_in) ** 0.5) < 0.01  # Kaiming normal, fan-in, ReLU
        assert torch.equal(block.conv.bias, torch.zeros(32))
    bound = (6 / (2 * fan_in)) ** 0.5  # Xavier uniform: fan_in = fan_out = 32 * 9
    assert all(block.conv.weight.abs().max() <= bound for block in xavier.conv_chain)
    assert xavier.conv_chain[0].conv.weight.abs().max() > 0.9 * bound, "uses the whole Xavier range"
    fc = hw4.build_net("net1fc", 64, CLASSES)
    assert [layer.out_features for layer in (fc.fc1, *fc.extra_fcs, fc.fc2)] == [64, 64, 5]
    taps = {}
    fc(torch.rand(1, 3, 64, 64), taps)
    assert list(taps)[-2:] == ["fc1", "fc1_2"]


def xavier_bound(layer: torch.nn.Module) -> float:
    fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(layer.weight)
    return (6 / (fan_in + fan_out)) ** 0.5


@pytest.mark.parametrize("name", ["net3xavier", "net1xavier"])
def test_xavier_initialises_the_weights_of_every_layer_as_the_original_proposes(name):
    """"Xavier initialization for the weights of each layer": the convs, the chain, fc1 and fc2 each spread over
    Xavier's uniform range (std bound / sqrt 3), which torch's default for fc1 (bound 1/sqrt(fan_in)) does not;
    the biases keep torch's default (its words name the weights)."""
    torch.manual_seed(0)
    net, default = hw4.build_net(name, 64, CLASSES), hw4.build_net(name.replace("xavier", ""), 64, CLASSES)
    layers = [m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(layers) == (14 if name == "net3xavier" else 4)
    for layer in layers:
        bound = xavier_bound(layer)
        assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.9 * bound
        assert abs(layer.weight.std().item() - bound / 3 ** 0.5) < 0.1 * bound
        assert layer.bias.abs().max() > 0, "torch's default bias, not zeros"
    assert net.fc1.weight.std() > 2 * default.fc1.weight.std(), "fc1 is no longer torch's default"


def test_lower_resolution_nets_see_their_pictures_area_averaged():
    """Net1-res0.5 on 64x64 pictures: conv1 sees 32x32, each pixel the mean of a 2x2 block; fc1 shrinks to match."""
    net = hw4.build_net("net1res50", 64, CLASSES)
    seen = {}
    net.conv1.register_forward_hook(lambda m, args, out: seen.update(x=args[0]))
    x = torch.rand(2, 3, 64, 64)
    net(x)
    assert seen["x"].shape == (2, 3, 32, 32)
    assert torch.allclose(seen["x"], x.view(2, 3, 32, 2, 32, 2).mean((3, 5)))
    assert net.fc1.in_features == 32 * 6 * 6 and hw4.build_net("net1res75", 64, CLASSES).fc1.in_features == 32 * 10 * 10
    assert hw4.scaled_side(16, 0.5) == hw4.MIN_IMAGE_SIZE and hw4.scaled_side(10, 0.5) is None, "never under 10"


def test_input_noise_is_seeded_per_epoch_and_has_its_std():
    x = torch.full((4000, 3, 4, 4), 0.5)
    a = hw4.InputNoise.for_epoch(hw4.NOISE_STD, seed=5, epoch=0).apply(x)
    again = hw4.InputNoise.for_epoch(hw4.NOISE_STD, seed=5, epoch=0).apply(x)
    other = hw4.InputNoise.for_epoch(hw4.NOISE_STD, seed=5, epoch=1).apply(x)
    assert torch.equal(a, again) and not torch.equal(a, other)
    assert abs((a - x).std().item() - hw4.NOISE_STD) < 0.002 and abs((a - x).mean().item()) < 0.002
    dark = hw4.InputNoise.for_epoch(hw4.NOISE_STD, seed=5, epoch=0).apply(torch.zeros(1000, 3, 4, 4))
    assert dark.min() < -0.2 and abs(dark.mean().item()) < 0.005, "no clamping: the noise averages to zero"


def test_the_fingerprint_sees_what_changes_numbers_not_labels():
    spec = hw4.NETS["net1drop"]
    assert "label" not in spec.trained() and "about" not in spec.trained() and spec.trained()["dropout"] == 0.5
    assert hw4_report.changed_fields("net1drop") == {"dropout"} and hw4_report.changed_fields("net2") == {"padding"}
    assert hw4_report.changed_fields("net1half") == {"train_fraction"} and hw4_report.changed_fields("net3he") == {"init"}
    assert hw4_report.changed_fields("net1noise") == {"noise_std"} and hw4_report.changed_fields("net1res50") == {"input_scale"}
    assert hw4_report.changed_fields("net3xavier") == {"init"} == hw4_report.changed_fields("net1xavier")


def test_every_remedy_net_is_a_table_row_with_a_base():
    for name, spec in hw4.NETS.items():
        if spec.remedy:
            assert spec.base in hw4.NETS and spec.remedy in {r.key for r in hw4_report.REMEDIES}, name
