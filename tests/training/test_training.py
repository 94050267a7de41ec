"""fastlic train / distill / train-ship: tiny models, 64 px crops, a handful of steps."""
from __future__ import annotations

import copy
import csv

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from fastlic.cli import main as cli
from fastlic.model import FastLIC, get_config
from fastlic.training.checkpoint import load_checkpoint, save_checkpoint
from fastlic.training.distill import (DistillArgs, DistillObjective, copy_shared,
                                      decoder_macs_per_pixel)
from fastlic.training.loop import TrainArgs, train_step
from fastlic.training.precision import Precision

FAST = ["--steps", "6", "--batch", "2", "--crop", "64", "--threads", "1", "--device", "cpu"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Two real photos (scikit-image), 96x128 and 80x80."""
    from skimage import data
    folder = tmp_path_factory.mktemp("data")
    Image.fromarray(data.coffee()[100:196, 200:328]).save(folder / "coffee.png")
    Image.fromarray(data.astronaut()[:80, 200:280]).save(folder / "astronaut.png")
    return folder


@pytest.fixture(scope="module")
def teacher_ckpt(data_dir, tmp_path_factory):
    """Pass 1: a tiny teacher trained 6 steps through the CLI."""
    out = tmp_path_factory.mktemp("teacher")
    assert cli(["train", str(data_dir), "--out", str(out), "--config", "tiny_teacher", *FAST]) == 0
    return out / "checkpoint.pt"


@pytest.fixture(scope="module")
def pass2_ckpt(data_dir, teacher_ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("pass2")
    assert cli(["distill", str(data_dir), "--out", str(out), "--teacher", str(teacher_ckpt),
                "--config", "tiny_student", *FAST]) == 0
    return out / "checkpoint.pt"


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# --- fastlic train ----------------------------------------------------------------------

def test_train_logs_plots_exports_and_resumes(data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    shipped = tmp_path / "tiny.safetensors"
    args = ["train", str(data_dir), "--out", str(run), "--config", "tiny", "--plot",
            "--export", str(shipped), "--quality", "7", *FAST]
    assert cli(args) == 0
    assert "images/s" in capsys.readouterr().out
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 6
    assert (run / "curve.png").stat().st_size > 0
    from fastlic.runtime.codec import Codec
    codec = Codec.load(shipped)
    assert (codec.info.name, codec.info.quality) == ("fastlic-tiny", 7)
    args[args.index("--steps") + 1] = "20"
    assert cli(args) == 0                       # resumes at step 6
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 20
    assert [int(r["step"]) for r in _rows(run / "log.csv")] == [6, 20]
    sessions = _rows(run / "sessions.csv")
    assert [(s["start_step"], s["end_step"]) for s in sessions] == [("0", "6"), ("6", "20")]
    assert all(float(s["images_per_s"]) > 0 for s in sessions)


def test_resumes_a_checkpoint_of_the_old_format(data_dir, tmp_path):
    """A checkpoint written before AMP/plot/export existed (no new args, no scaler) resumes."""
    run = tmp_path / "old"
    run.mkdir()
    model = FastLIC(get_config("tiny"))
    old_args = {k: v for k, v in vars(TrainArgs(str(data_dir), str(run), config="tiny")).items()
                if k not in ("device", "amp", "plot", "export", "export_name", "quality", "init")}
    torch.save({"model": model.state_dict(), "opt": torch.optim.Adam(model.parameters()).state_dict(),
                "step": 3, "config": model.cfg.to_json(), "args": old_args}, run / "checkpoint.pt")
    assert cli(["train", str(data_dir), "--out", str(run), *FAST]) == 0
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 6


def test_init_starts_a_new_run_from_shipped_weights(data_dir, teacher_ckpt, tmp_path):
    shipped = tmp_path / "teacher.safetensors"
    assert cli(["train-ship", str(teacher_ckpt), str(shipped), "--fp32"]) == 0
    run = tmp_path / "again"
    args = ["train", str(data_dir), "--out", str(run), "--init", str(shipped), *FAST]
    args[args.index("--steps") + 1] = "0"
    assert cli(args) == 0
    ckpt, teacher = load_checkpoint(run / "checkpoint.pt"), load_checkpoint(teacher_ckpt)
    assert ckpt["step"] == 0 and ckpt["config"] == teacher["config"]
    for k, v in teacher["model"].items():
        assert torch.equal(ckpt["model"][k], v), k


def test_plot_only_draws_a_run_in_progress(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with open(run / "log.csv", "w") as f:
        f.write("step,time,loss,bpp,psnr,l1,lr\n")
        f.writelines(f"{20 * i},{i},{5 - 0.1 * i},{0.5},{20 + 0.1 * i},0.3,0.0002\n" for i in range(1, 30))
    assert cli(["train", "--plot-only", str(run)]) == 0
    assert (run / "curve.png").read_bytes()[:4] == b"\x89PNG"


def test_train_without_data_is_a_usage_error():
    with pytest.raises(SystemExit):
        cli(["train", "--out", "x"])


def test_train_ship_writes_a_runtime_model(teacher_ckpt, tmp_path):
    out = tmp_path / "teacher.safetensors"
    assert cli(["train-ship", str(teacher_ckpt), str(out), "--name", "t-test", "--quality", "2"]) == 0
    from fastlic.runtime.codec import Codec
    assert Codec.load(out).info.name == "t-test"


# --- mixed precision (CPU bf16 stands in for CUDA here) ----------------------------------

def test_bf16_autocast_covers_transforms_only():
    torch.manual_seed(0)
    model = FastLIC(get_config("tiny"))
    seen = {}

    def record(name):
        def hook(module, inputs, output):
            seen.setdefault(name, output.dtype)   # returns None: the output is kept
        return hook

    model.g_a[0].register_forward_hook(record("conv"))
    model.g_a[4].deform.register_forward_hook(record("deform"))
    Precision(torch.device("cpu"), "bf16").wrap(model)
    out = model(torch.rand(1, 3, 64, 64), return_features=True)
    assert seen == {"conv": torch.bfloat16, "deform": torch.float32}
    for key in ("y", "scale", "mean", "x_hat", "bits_y", "bits_z"):
        assert out[key].dtype == torch.float32, key
    clone = copy.deepcopy(model)
    assert clone.g_a.forward.__self__ is clone.g_a     # a copy is wrapped, not its original
    Precision.unwrap(model)
    seen.clear()
    model(torch.rand(1, 3, 64, 64))
    assert seen["conv"] == torch.float32


def test_bf16_step_is_finite_and_modes_are_checked():
    torch.manual_seed(0)
    model = FastLIC(get_config("tiny")).train()
    precision = Precision(torch.device("cpu"), "bf16")
    precision.wrap(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    from fastlic.training.loop import Objective
    stats, status = train_step(model, Objective(TrainArgs("", "")), torch.rand(2, 3, 64, 64), opt, precision)
    assert status == "ok" and np.isfinite(stats["loss"])
    assert Precision(torch.device("cpu"), "auto").mode == "off"
    with pytest.raises(ValueError, match="CUDA"):
        Precision(torch.device("cpu"), "fp16")
    with pytest.raises(ValueError, match="choose one of"):
        Precision(torch.device("cpu"), "fp8")


# --- distillation ------------------------------------------------------------------------

def test_distillation_terms_are_finite_and_decrease(teacher_ckpt):
    torch.manual_seed(0)
    args = DistillArgs("", "", teacher=str(teacher_ckpt), config="tiny_student", init="none",
                       lr=1e-3, l1=0.0, w_rec=10.0, w_feat=10.0, w_ent=10.0)
    objective = DistillObjective(args)
    model = FastLIC(objective.config()).train()
    objective.init(model)
    adapters = objective.prepare(model)
    opt = torch.optim.Adam([{"params": list(model.parameters())},
                            {"params": list(adapters.parameters())}], lr=args.lr)
    precision = Precision(torch.device("cpu"), "off")
    objective.to(torch.device("cpu"), precision)
    x = torch.rand(2, 3, 64, 64)
    history = []
    for _ in range(20):
        stats, status = train_step(model, objective, x, opt, precision)
        assert status == "ok"
        history.append(stats)
    for term in ("d_rec", "d_feat", "d_ent"):
        values = [s[term] for s in history]
        assert np.isfinite(values).all(), term
        assert np.mean(values[-3:]) < 0.8 * values[0], (term, values)


def test_distill_checkpoint_keeps_adapters_and_ships_without_them(pass2_ckpt, tmp_path):
    ckpt = load_checkpoint(pass2_ckpt)
    assert ckpt["step"] == 6 and ckpt["adapters"]
    assert {"d_rec", "d_feat", "d_ent"} <= set(_rows(pass2_ckpt.parent / "log.csv")[0])
    out = tmp_path / "student.safetensors"
    assert cli(["train-ship", str(pass2_ckpt), str(out)]) == 0
    with safe_open(str(out), framework="pt") as f:
        keys = set(f.keys())
    own = set(FastLIC(get_config("tiny_student")).state_dict())
    own = own - {"context.weight"} | {"context.weight_live_taps"}   # only the live taps stored
    assert own <= keys
    # no adapter tensors: only the tables and the exact path the shipping adds
    assert all(k.startswith(("tables.", "exact.", "qat.")) for k in keys - own), keys - own


def test_pass2_starts_from_the_teacher_outside_the_decoder(teacher_ckpt):
    objective = DistillObjective(DistillArgs("", "", teacher=str(teacher_ckpt), config="tiny_student"))
    student = FastLIC(objective.config())
    copied = copy_shared(student, objective.teacher)
    teacher_state = objective.teacher.state_dict()
    assert copied and not any(k.startswith("g_s.") for k in copied)
    for k in copied:
        assert torch.equal(student.state_dict()[k], teacher_state[k]), k


@pytest.mark.parametrize("freeze", [False, True])
def test_pass3_initialises_shared_parts_from_pass2(data_dir, teacher_ckpt, pass2_ckpt, tmp_path, freeze):
    out = tmp_path / "pass3"
    steps = "3" if freeze else "0"
    args = ["distill", str(data_dir), "--out", str(out), "--pass", "3", "--teacher", str(teacher_ckpt),
            "--init", str(pass2_ckpt), "--config", "tiny_student_slim", *FAST]
    args[args.index("--steps") + 1] = steps
    assert cli(args + (["--freeze-shared"] if freeze else [])) == 0
    slim, student = load_checkpoint(out / "checkpoint.pt"), load_checkpoint(pass2_ckpt)
    shared = [k for k in slim["model"] if not k.startswith("g_s.")]
    assert len(shared) > 40
    for k in shared:
        assert torch.equal(slim["model"][k], student["model"][k]), k
    assert slim["model"]["g_s.out.weight"].shape != student["model"]["g_s.out.weight"].shape


def test_pass3_needs_init(data_dir, teacher_ckpt, tmp_path):
    with pytest.raises(SystemExit):
        cli(["distill", str(data_dir), "--out", str(tmp_path / "x"), "--pass", "3",
             "--teacher", str(teacher_ckpt)])


def test_copy_shared_refuses_models_that_differ_outside_the_decoder():
    with pytest.raises(ValueError, match="differ outside the decoder"):
        copy_shared(FastLIC(get_config("tiny_student")), FastLIC(get_config("tiny", hyper_channels=4)))


@pytest.mark.parametrize("student, slim", [("student", "student_slim"),
                                           ("tiny_student", "tiny_student_slim")])
def test_slim_decoder_has_at_most_half_the_macs(student, slim):
    s, t = get_config(student), get_config(slim)
    assert (t.enc_channels, t.latent_channels, t.hyper_channels) == \
        (s.enc_channels, s.latent_channels, s.hyper_channels)
    assert decoder_macs_per_pixel(t) <= 0.5 * decoder_macs_per_pixel(s)


def test_decoder_macs_oracle():
    """Counted by hand for a 2-channel decoder on a 64x64 image (4x4 latent)."""
    cfg = get_config("tiny", latent_channels=2, dec_channels=2)
    inputs = [4 * 4, 8 * 8, 16 * 16, 32 * 32]          # pixels into each 5x5 deconv
    deconvs = sum(p * 2 * cout * 25 for p, cout in zip(inputs, [2, 2, 2, 3]))   # cin = 2
    igdn = sum(4 * p * 2 * 2 for p in inputs[:3])      # a 2x2 1x1 conv on each stage output
    assert decoder_macs_per_pixel(cfg) == pytest.approx((deconvs + igdn) / 4096)


def test_save_checkpoint_is_atomic(tmp_path):
    model = FastLIC(get_config("tiny"))
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, model, torch.optim.Adam(model.parameters()), 1, TrainArgs("", ""))
    assert not path.with_suffix(".tmp").exists()
    assert load_checkpoint(path)["step"] == 1
