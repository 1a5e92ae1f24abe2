"""The compress stage on real models: coupled channels stay consistent, pruned models export
and run in ONNX Runtime, each mask granularity zeroes exactly its units, distillation
recovers accuracy, low-rank layers replace the originals only where MACs drop, and the
user's mistakes are one-line ConfigErrors."""

from __future__ import annotations

import sys
from pathlib import Path

import models
import numpy as np
import onnx
import pytest
import torch
from conftest import REPO, cli, explain, ort_session, write_toml
from onnx import numpy_helper
from torch import nn

sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "examples" / "digits"))
import zoo  # noqa: E402

from edgepack.config import PRUNE_CRITERIA, CompressSection, config_from_dict  # noqa: E402
from edgepack.errors import ConfigError  # noqa: E402
from edgepack.stages.compress import CRITERIA, CompressionData, compress  # noqa: E402
from edgepack.stages.compress.importance import L2  # noqa: E402
from edgepack.stages.compress.lowrank import factorize  # noqa: E402
from edgepack.stages.compress.measure import count_macs  # noqa: E402
from edgepack.stages.compress.prune import prune_filters  # noqa: E402
from edgepack.stages.export import export_torch  # noqa: E402


@pytest.fixture(autouse=True)
def one_torch_thread():
    """As the compress stage does: small-batch torch on a shared 2-core box is far faster with
    one thread (see CompressSection.threads)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def digits():
    c, e = np.load(REPO / "calibration/digits/calib.npz"), np.load(REPO / "calibration/digits/eval.npz")
    return c["x"], c["y"], e["x"], e["y"]


def digits_model():
    import model as digits_example  # examples/digits/model.py

    return digits_example.build()


def digits_data(digits, **kw) -> CompressionData:
    xc, yc, xe, ye = digits
    return CompressionData((1, 1, 8, 8), xc, yc, xe, ye, round_to=8, **kw)


def section(**kw) -> CompressSection:
    return CompressSection.model_validate(kw)


def exports_and_runs(model: nn.Module, shape, tmp_path: Path, name: str) -> None:
    """The model exports with edgepack's exporter and ONNX Runtime reproduces torch's outputs."""
    model.eval()
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model(x).numpy()
    path = export_torch(model, tuple(shape), tmp_path / f"{name}.onnx")
    sess = ort_session(path)
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)


def randomised(model: nn.Module, shape) -> nn.Module:
    """Random weights with BatchNorm statistics set from random inputs (unit-scale activations)."""
    gen = torch.Generator().manual_seed(1)
    zoo.recalibrate_batchnorm(model, [torch.randn(8, *shape[1:], generator=gen) for _ in range(2)])
    return model.eval()


def prune(model, shape, ratio=0.5, round_to=1, **kw) -> dict:
    return prune_filters(model, torch.randn(*shape), L2(), ratio=ratio, round_to=round_to, **kw)


# ------------------------------------------------------------------ coupled channels


def test_resnet_residual_adds_stay_consistent(tmp_path):
    torch.manual_seed(0)
    shape = (1, 3, 32, 32)
    model = randomised(zoo.resnet18(num_classes=10, width_mult=0.25), shape)
    macs = count_macs(model, shape)
    record = prune(model, shape, 0.5, round_to=4)
    assert count_macs(model, shape) < macs / 2
    assert record["output_layers_kept"] == ["fc"] and model.fc.out_features == 10
    width = model.stem[0][0].out_channels
    assert model.stem[0][1].num_features == width
    for stage in model.stages:
        for block in stage:
            c1, b1, c2, b2 = block.conv1[0], block.conv1[1], block.conv2[0], block.conv2[1]
            assert c1.in_channels == width and b1.num_features == c1.out_channels == c2.in_channels
            assert b2.num_features == c2.out_channels
            if isinstance(block.shortcut, nn.Identity):
                assert c2.out_channels == width  # the add: both operands keep the same channels
            else:
                assert block.shortcut[0].in_channels == width
                assert block.shortcut[0].out_channels == block.shortcut[1].num_features == c2.out_channels
            width = c2.out_channels
            assert width % 4 == 0
    assert model.fc.in_features == width
    exports_and_runs(model, shape, tmp_path, "resnet")


def test_mobilenet_depthwise_and_skips_stay_consistent(tmp_path):
    torch.manual_seed(0)
    shape = (1, 3, 32, 32)
    model = randomised(zoo.mobilenet_v2(num_classes=10, width_mult=0.35), shape)
    params = sum(p.numel() for p in model.parameters())
    prune(model, shape, 0.5, round_to=8)
    assert sum(p.numel() for p in model.parameters()) < params / 2
    width = model.features[0][0].out_channels
    for block in model.features[1:-1]:
        convs = [m for m in block.body.modules() if isinstance(m, nn.Conv2d)]
        bns = [m for m in block.body.modules() if isinstance(m, nn.BatchNorm2d)]
        assert convs[0].in_channels == width
        for conv, bn in zip(convs, bns):
            assert bn.num_features == conv.out_channels
        for a, b in zip(convs, convs[1:]):
            assert b.in_channels == a.out_channels
        dw = [c for c in convs if c.groups > 1]
        assert len(dw) == 1 and dw[0].groups == dw[0].in_channels == dw[0].out_channels
        if block.use_skip:
            assert convs[-1].out_channels == width
        width = convs[-1].out_channels
    assert model.classifier[1].in_features == model.features[-1][0].out_channels
    assert model.classifier[1].out_features == 10
    exports_and_runs(model, shape, tmp_path, "mobilenet")


def test_concatenation_slices_stay_consistent(tmp_path):
    torch.manual_seed(0)
    shape = (1, 1, 16, 16)
    model = randomised(models._unseen_cnn_class()(), shape)
    prune(model, shape, 0.5)
    b3, b1 = model.branch3[0].out_channels, model.branch1[0].out_channels
    assert b3 < 24 and b1 < 24
    assert model.branch3[0].in_channels == model.branch1[0].in_channels == model.stem[0].out_channels
    assert model.res1[0].in_channels == b3 + b1  # concat → residual block
    assert model.res2[0].out_channels == model.res2[1].num_features == b3 + b1  # add with the concat
    assert model.down[0].in_channels == b3 + b1
    assert model.fc.in_features == model.head[0].out_channels and model.fc.out_features == 10
    exports_and_runs(model, shape, tmp_path, "concat")


class SEBlockNet(nn.Module):
    """conv → BN → ReLU → squeeze-excitation gate (GAP → FC → ReLU → FC → sigmoid, × input) → conv → GAP → FC."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.se_reduce = nn.Linear(32, 8)
        self.se_expand = nn.Linear(8, 32)
        self.conv2 = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.fc = nn.Linear(32, 5)

    def forward(self, x):
        x = self.conv(x)
        gate = torch.sigmoid(self.se_expand(torch.relu(self.se_reduce(x.mean((2, 3))))))
        x = self.conv2(x * gate[:, :, None, None])
        return self.fc(x.mean((2, 3)))


def test_squeeze_excitation_gates_stay_consistent(tmp_path):
    torch.manual_seed(0)
    shape = (1, 3, 8, 8)
    model = randomised(SEBlockNet(), shape)
    prune(model, shape, 0.5)
    c = model.conv[0].out_channels
    assert c == 16
    assert model.se_reduce.in_features == c and model.se_expand.out_features == c
    assert model.se_expand.in_features == model.se_reduce.out_features == 4
    assert model.conv2[0].in_channels == c
    assert model.fc.out_features == 5
    exports_and_runs(model, shape, tmp_path, "se")


def test_round_to_ignore_and_per_layer_overrides():
    torch.manual_seed(0)
    shape = (1, 3, 16, 16)
    model = randomised(zoo.residual_cnn(num_classes=10, width_mult=1.5), shape)  # widths 24, 48, 96
    record = prune(model, shape, 0.5, round_to=8, ignore=["stem"], per_layer={"down.1": 0.25})
    assert record["ignored"] == ["stem"]
    # the stem's group (stem, depthwise, pointwise, the residual add) keeps all 24 channels
    assert model.stem[0].out_channels == model.dw[0].out_channels == model.pw[0].out_channels == 24
    assert model.down[0][0].out_channels == 24  # 48 · 0.5
    assert model.down[1][0].out_channels == 72  # 96 · 0.75, its own ratio
    assert all(v["after"][1] % 8 == 0 for name, v in record["layers"].items() if name != "fc")
    with pytest.raises(ConfigError, match=r"compress.prune.ignore: .*no module named 'nope'"):
        prune(randomised(zoo.residual_cnn(), shape), shape, ignore=["nope"])


def test_round_to_never_removes_a_whole_group():
    torch.manual_seed(0)
    shape = (1, 3, 16, 16)
    model = randomised(zoo.residual_cnn(num_classes=10, width_mult=0.5), shape)  # widths 8, 16, 32
    prune(model, shape, 0.9, round_to=16)
    widths = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert min(widths) >= 1
    assert model(torch.randn(*shape)).shape == (1, 10)


# ------------------------------------------------------------------ criteria and the record


def test_every_criterion_prunes_and_is_compared_with_random(digits):
    assert set(CRITERIA) == set(PRUNE_CRITERIA)
    data = digits_data(digits)
    values = {}
    for name in PRUNE_CRITERIA:
        result = compress(digits_model(), section(prune={"ratio": 0.5, "criterion": name, "random_trials": 2}),
                          data=data)
        rec = result.record
        p = rec["prune"]
        assert p["criterion"] == name and p["speeds_up_dense_runtimes"] is True
        assert rec["after"]["macs"] < rec["before"]["macs"] / 3 and rec["after"]["zero_fraction"] == 0.0
        assert rec["before"]["quality"]["top1"] == pytest.approx(98.75)
        values[name] = p["after_pruning"]["value"]
        if name == "random":
            assert p["random_baseline"] is None and p["beats_random"] is None
        else:
            assert p["random_baseline"]["trials"] == 2
            assert p["beats_random"] == (values[name] > p["random_baseline"]["value"])
    # a seeded random pruning is reproducible
    again = compress(digits_model(), section(prune={"ratio": 0.5, "criterion": "random"}), data=data)
    assert again.record["prune"]["after_pruning"]["value"] == values["random"]


def test_the_teacher_is_left_unpruned(digits):
    model = digits_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = compress(model, section(prune={"ratio": 0.5}), data=digits_data(digits))
    assert result.module is not model
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ------------------------------------------------------------------ mask granularities


def _units(w: torch.Tensor, granularity: str) -> torch.Tensor:
    """Each unit's weights as one row: [units, unit size]."""
    w4 = w if w.dim() == 4 else w[:, :, None, None]
    if granularity == "fine":
        return w4.reshape(-1, 1)
    if granularity == "vector":
        return w4.reshape(-1, w4.shape[3])
    return w4.reshape(-1, w4.shape[2] * w4.shape[3])


@pytest.mark.parametrize("granularity", ["fine", "vector", "kernel"])
def test_mask_granularity_zeroes_exactly_its_units(digits, granularity, tmp_path):
    result = compress(digits_model(), section(prune={"ratio": 0.5, "granularity": granularity, "random_trials": 1}),
                      data=digits_data(digits))
    model, rec = result.module, result.record
    assert rec["prune"]["speeds_up_dense_runtimes"] is False
    assert rec["after"]["parameters"] == rec["before"]["parameters"] and rec["after"]["macs"] == rec["before"]["macs"]
    for name, m in model.named_modules():
        if not isinstance(m, (nn.Conv2d, nn.Linear)):
            continue
        assert not hasattr(m, "weight_mask")  # made permanent: a plain weight with zeros in it
        units = _units(m.weight.detach(), granularity)
        zero = (units == 0).all(1)
        # every unit is either all zero or untouched (trained weights are never exactly zero)
        assert ((units == 0).any(1) == zero).all(), name
        assert int(zero.sum()) == int(round(0.5 * len(units))), name
        assert rec["prune"]["layers"][name]["zero_fraction"] == pytest.approx(float((m.weight == 0).float().mean()))
    assert rec["after"]["zero_fraction"] == pytest.approx(0.5, abs=0.01)
    # the zeros survive export and BatchNorm folding
    path = export_torch(model, (1, 1, 8, 8), tmp_path / "masked.onnx")
    from edgepack.stages.graph import clean_float_graph

    cleaned = clean_float_graph(onnx.load(str(path)), "masked", (1, 1, 8, 8))
    inits = {i.name: numpy_helper.to_array(i) for i in cleaned.graph.initializer}
    convs = [inits[n.input[1]] for n in cleaned.graph.node if n.op_type == "Conv"]
    assert len(convs) == 5
    for w in convs:
        units = _units(torch.from_numpy(w.copy()), granularity)
        assert int((units == 0).all(1).sum()) == int(round(0.5 * len(units)))


def test_global_masks_rank_all_layers_together(digits):
    result = compress(digits_model(), section(prune={"ratio": 0.6, "granularity": "fine", "global": True,
                                                     "random_trials": 1}), data=digits_data(digits))
    layers = result.record["prune"]["layers"]
    fractions = [v["zero_fraction"] for v in layers.values()]
    assert max(fractions) - min(fractions) > 0.2  # not 60 % everywhere
    assert result.record["after"]["zero_fraction"] == pytest.approx(0.6, abs=0.01)


# ------------------------------------------------------------------ distillation


@pytest.mark.parametrize("mode", ["weak", "strong"])
def test_distillation_recovers_accuracy_of_a_pruned_model(digits, mode):
    result = compress(digits_model(), section(prune={"ratio": 0.5, "random_trials": 1},
                                              distill={"mode": mode, "epochs": 25}), data=digits_data(digits))
    rec = result.record
    d = rec["distill"]
    after_pruning = rec["prune"]["after_pruning"]["top1"]
    assert d["before"]["top1"] == after_pruning
    assert d["after"]["top1"] >= after_pruning + 20  # measured: ~45 % → ~94 % on held-out data
    assert rec["after"]["quality"]["top1"] == d["after"]["top1"]
    assert len(d["losses"]) == 25 and d["losses"][-1] < d["losses"][0]
    assert bool(d["feature_layers"]) == (mode == "strong")
    assert d["labelled"] is True and d["data"] == "calibration data"


def test_iterative_pruning_spreads_distillation_over_steps(digits):
    result = compress(digits_model(), section(prune={"ratio": 0.5, "steps": 2, "random_trials": 1},
                                              distill={"epochs": 10}), data=digits_data(digits))
    rec = result.record
    assert len(rec["distill"]["losses"]) == 5  # the other 5 epochs ran between the two steps
    assert rec["after"]["macs"] < rec["before"]["macs"] / 3
    assert rec["distill"]["after"]["top1"] > rec["prune"]["after_pruning"]["top1"]


def test_strong_distillation_without_labels_is_a_config_error(digits):
    xc, _, xe, _ = digits
    data = CompressionData((1, 1, 8, 8), xc, None, xe, None, round_to=8)
    with pytest.raises(ConfigError, match=r"compress.distill.mode: 'strong' needs labelled"):
        compress(digits_model(), section(prune={"ratio": 0.5}, distill={"mode": "strong"}), data=data)
    # weak distillation needs no labels; quality is then agreement with the unpruned model
    result = compress(digits_model(), section(prune={"ratio": 0.5, "random_trials": 1}, distill={"epochs": 3}),
                      data=data)
    assert "top1" not in result.record["after"]["quality"]
    assert result.record["evaluation"]["metric"] == "top1_agreement"


# ------------------------------------------------------------------ low rank


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Conv2d(16, 64, 1)
        self.fc1 = nn.Linear(64, 96)
        self.fc2 = nn.Linear(96, 4)

    def forward(self, x):
        x = self.proj(x).mean((2, 3))
        return self.fc2(torch.relu(self.fc1(x)))


def _low_rank_mlp() -> Mlp:
    """Weights that are nearly rank 8 where it pays off (proj, fc1)."""
    torch.manual_seed(0)
    m = Mlp()
    with torch.no_grad():
        m.proj.weight.copy_((torch.randn(64, 8) @ torch.randn(8, 16))[:, :, None, None] / 4)
        m.fc1.weight.copy_(torch.randn(96, 8) @ torch.randn(8, 64) / 8 + 1e-3 * torch.randn(96, 64))
    return m.eval()


def test_low_rank_replaces_layers_only_where_macs_drop(tmp_path):
    model = _low_rank_mlp()
    x = torch.randn(4, 16, 4, 4)
    want = model(x).detach()
    macs = count_macs(model, (1, 16, 4, 4))
    record = factorize(model, energy=0.999)
    assert record["proj"]["replaced"] and record["proj"]["rank"] == 8
    assert record["fc1"]["replaced"] and record["fc1"]["rank"] == 8
    assert not record["fc2"]["replaced"]  # 96 → 4: no rank saves MACs
    assert isinstance(model.fc1, nn.Sequential) and model.fc1[0].out_features == 8
    assert isinstance(model.proj, nn.Sequential) and model.proj[0].out_channels == 8
    assert isinstance(model.fc2, nn.Linear)
    assert macs == 16 * 16 * 64 + 64 * 96 + 96 * 4
    assert count_macs(model, (1, 16, 4, 4)) == 16 * (16 * 8 + 8 * 64) + 8 * (64 + 96) + 96 * 4
    got = model(x).detach()
    assert float(((got - want) ** 2).sum() / (want**2).sum()) < 1e-4
    exports_and_runs(model, (1, 16, 4, 4), tmp_path, "lowrank")

    explicit = factorize(_low_rank_mlp(), rank=40)
    assert explicit["fc1"]["rank"] == 40 and not explicit["proj"]["replaced"]  # 40·80 > 16·64


def test_low_rank_in_the_stage_with_distillation(digits):
    result = compress(digits_model(), section(lowrank={"rank": 4}, distill={"epochs": 10}), data=digits_data(digits))
    rec = result.record
    assert rec["order"] == ["lowrank", "distill"]
    assert rec["lowrank"]["layers"]["fc"]["replaced"] and rec["lowrank"]["replaced"] >= 1
    assert rec["after"]["macs"] < rec["before"]["macs"]
    assert rec["distill"]["after"]["top1"] > rec["lowrank"]["after_lowrank"]["top1"]


# ------------------------------------------------------------------ configuration errors


BASE = {"name": "m", "model": {"torch": "m.py:f", "input_shape": [1, 1, 8, 8]}, "data": {"calibration": "c.npz"},
        "targets": ["x86-64"]}


@pytest.mark.parametrize("compress_section, field, words", [
    ({"prune": {"ratio": 0.5, "criterion": "magic"}}, "compress.prune.criterion", "unknown criterion 'magic'"),
    ({"prune": {"ratio": 1.5}}, "compress.prune.ratio", "less than 1"),
    ({"prune": {"ratio": 0.0}}, "compress.prune.ratio", "greater than 0"),
    ({"prune": {"ratio": 0.5, "per_layer": {"fc": 2}}}, "compress.prune.per_layer", "expected 0 <= ratio < 1"),
    ({"prune": {"ratio": 0.5, "granularity": "fine", "criterion": "bn_scale"}}, "compress.prune",
     "scores whole channels"),
    ({"prune": {"ratio": 0.5, "granularity": "block"}}, "compress.prune.granularity", "filter"),
    ({"prune": {"ratio": 0.5, "speed": 2}}, "compress.prune.speed", "Extra inputs"),
    ({"distill": {"epochs": 3}}, "compress", "needs a compression to recover from"),
    ({"prune": {"ratio": 0.5}, "distill": {"temperature": 0}}, "compress.distill.temperature", "greater than 0"),
    ({"prune": {"ratio": 0.5}, "distill": {"mode": "medium"}}, "compress.distill.mode", "weak"),
    ({"lowrank": {"energy": 0.9, "rank": 3}}, "compress.lowrank", "exactly one of energy"),
    ({"lowrank": {"energy": 1.5}}, "compress.lowrank.energy", "less than or equal to 1"),
])
def test_config_errors_name_the_field(compress_section, field, words):
    with pytest.raises(ConfigError) as err:
        config_from_dict({**BASE, "compress": compress_section})
    assert f"field '{field}'" in str(err.value) and words in str(err.value)


def test_compression_of_an_onnx_source_is_refused():
    with pytest.raises(ConfigError, match=r"field 'compress': compression needs a PyTorch factory.*ONNX file"):
        config_from_dict({**BASE, "model": {"onnx": "m.onnx"}, "compress": {"prune": {"ratio": 0.5}}})
    cfg = config_from_dict({**BASE, "compress": {"prune": {"ratio": 0.5, "global": True}}})
    assert cfg.compress.prune.global_pruning is True and cfg.compress.threads == 1


def test_config_file_resolves_the_distillation_data_path(tmp_path):
    cfg_path = write_toml(tmp_path / "edgepack.toml", """
        name = "m"
        targets = ["x86-64"]
        [model]
        torch = "model.py:build"
        input_shape = [1, 1, 8, 8]
        [data]
        calibration = "calib.npz"
        [compress.prune]
        ratio = 0.5
        criterion = "taylor"
        global = true
        per_layer = { "down1" = 0.25 }
        [compress.distill]
        data = "train/train.npz"
        mode = "strong"
    """)
    from edgepack.config import load_config

    cfg = load_config(cfg_path)
    assert cfg.compress.distill.data == str(tmp_path / "train" / "train.npz")
    assert cfg.compress.prune.per_layer == {"down1": 0.25} and cfg.compress.prune.global_pruning


def test_cli_compression_mistakes_are_one_line_exit_2(tmp_path, tiny_model, tiny_calib):
    proc = cli("build", "--onnx", tiny_model, "--calib", tiny_calib, "--targets", "x86-64", "--out", tmp_path,
               "--prune", "0.5")
    assert proc.returncode == 2, explain(proc)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "compress" in lines[0] and "ONNX file" in lines[0], explain(proc)
    proc = cli("build", "--torch", f"{REPO / 'examples/digits/model.py'}:build", "--input-shape", "1,1,8,8",
               "--calib", REPO / "calibration/digits/calib.npz", "--targets", "x86-64", "--out", tmp_path,
               "--prune", "0.5", "--prune-criterion", "magic")
    assert proc.returncode == 2, explain(proc)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--prune-criterion" in lines[0] and "magic" in lines[0], explain(proc)
    assert not any(tmp_path.iterdir())  # no bundle left behind


class _SplitShuffle(nn.Module):
    """A ShuffleNetV2 unit in miniature: split the channels, transform one half, concatenate,
    shuffle. Torch-Pruning 1.5/1.6 mis-traces this coupling (the pruned model no longer runs)
    or fails tracing the shuffle of a whole ShuffleNetV2."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 1)
        self.c = nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        y1, y2 = self.a(x).chunk(2, dim=1)
        y = torch.cat((y1, self.b(y2)), 1)
        n, c, h, w = y.shape
        y = y.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, c, h, w)
        return self.fc(self.c(y).mean((2, 3)))


def test_mis_traced_channel_coupling_is_a_clear_model_error():
    from edgepack.errors import ModelError

    with pytest.raises(ModelError, match=r"filter pruning: Torch-Pruning .*(cannot trace|inconsistent)") as info:
        prune(_SplitShuffle().eval(), (1, 3, 8, 8), 0.5)
    assert "\n" not in str(info.value)
