"""The fast path's numerics, on a CPU: a torch.compile'd train step gives the eager step's loss and gradients
(fp32), and the masks the training jobs draw stay uniformly random."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mixsweep.models.mae import build_mae
from mixsweep.models.segment import build_segmenter
from mixsweep.train.loop import epoch_generator

# Inductor's decompositions and its min-cut partitioner (the graph the fast path trains), run eagerly. The
# product compiles on CUDA only (Triton kernels: the GPU tests below); on a CPU inductor would build C++
# kernels nothing runs, about a minute on a cold cache. The store-sharing test still builds C++ kernels.
BACKEND = "aot_eager_decomp_partition"


def loss_and_grads(model, loss_fn) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = loss_fn()
    loss.backward()
    grads = {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.grad is not None}
    return float(loss.detach()), grads


def assert_close(eager, compiled, rtol: float, atol: float) -> None:
    (l0, g0), (l1, g1) = eager, compiled
    assert math.isclose(l0, l1, rel_tol=rtol, abs_tol=atol), (l0, l1)
    assert g0.keys() == g1.keys() and g0
    for k in g0:
        assert torch.allclose(g0[k], g1[k], rtol=rtol, atol=atol), (k, (g0[k] - g1[k]).abs().max())


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 64, 64, generator=g)
    labels = torch.randint(0, 3, (4, 64, 64), generator=g)
    labels[:, :3] = 255  # some ignored pixels, as the trimap's unusable ones
    return x, labels


def test_compiled_mae_step_matches_eager(inputs):
    torch.manual_seed(0)
    model = build_mae("tiny", norm_pix_loss=True)
    x, _ = inputs
    noise = torch.rand(x.shape[0], model.preset.num_patches, generator=torch.Generator().manual_seed(1))
    eager = loss_and_grads(model, lambda: model(x, mask_ratio=0.75, noise=noise)[0])
    compiled_model = torch.compile(model, backend=BACKEND)
    compiled = loss_and_grads(model, lambda: compiled_model(x, mask_ratio=0.75, noise=noise)[0])
    # Same mask (same noise), same weights: fp32 differences are kernel fusion's reassociation only.
    assert_close(eager, compiled, rtol=1e-4, atol=1e-5)


def test_compiled_finetune_step_matches_eager(inputs):
    torch.manual_seed(0)
    model = build_segmenter("scratch", preset="tiny", head="decoder")
    x, labels = inputs

    def loss(m):
        return lambda: F.cross_entropy(m(x).float(), labels, ignore_index=255)

    eager = loss_and_grads(model, loss(model))
    compiled = loss_and_grads(model, loss(torch.compile(model, backend=BACKEND)))
    assert_close(eager, compiled, rtol=1e-4, atol=1e-5)


def test_training_masks_are_uniformly_random():
    """The masks the pre-training job draws (its noise generator, then the model's argsort): every patch is
    kept with probability 1 - r, independently of its position, and each image keeps exactly L(1 - r)."""
    model = build_mae("tiny")
    length, draws, ratio = model.preset.num_patches, 4000, 0.75
    gen = epoch_generator(seed=0, epoch=0, rank=0, device=torch.device("cpu"), stream=2)
    noise = torch.rand(draws, length, generator=gen)
    tokens = torch.zeros(draws, length, 1)
    _, mask, _ = model.random_masking(tokens, ratio, noise)
    kept = 1 - mask
    assert (kept.sum(1) == int(length * (1 - ratio))).all()
    # Per-position keep rate: binomial(draws, 0.25); 5 standard deviations over 64 positions.
    p = 1 - ratio
    sd = math.sqrt(p * (1 - p) / draws)
    rates = kept.mean(0)
    assert (rates - p).abs().max() < 5 * sd, rates
    # Neighbouring patches are kept together no more often than chance (a sorted or strided mask would be).
    pair = (kept[:, :-1] * kept[:, 1:]).mean()
    expected = p * (int(length * p) - 1) / (length - 1)  # sampling without replacement
    assert abs(float(pair) - expected) < 0.01
    # Other epochs and ranks draw other masks.
    other = torch.rand(draws, length, generator=epoch_generator(0, 1, 0, torch.device("cpu"), stream=2))
    assert not torch.equal(noise, other)


_COMPILE_ONCE = """
import sys, torch
from mixsweep.train.compile_cache import use_shared_cache
print(use_shared_cache(sys.argv[1], torch.device("cpu")) is not None)
f = torch.compile(lambda x: (x * 2).sin().sum(), backend="inductor")
f(torch.randn(8))
from torch._dynamo.utils import counters
print(counters["inductor"]["fxgraph_cache_hit"], counters["inductor"]["fxgraph_cache_miss"])
"""


def test_stages_share_compiled_graphs_through_the_store(tmp_path, monkeypatch):
    """Two fresh processes (two nodes) with one shared folder: the second finds the first's graph built."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")}
    shared = tmp_path / "compile-cache"

    def run() -> tuple[str, int, int]:
        out = subprocess.run([sys.executable, "-c", _COMPILE_ONCE, str(shared)], env=env, capture_output=True,
                             text=True, check=True).stdout.split()
        return out[0], int(out[1]), int(out[2])

    assert run() == ("True", 0, 1)  # compiled, into the shared folder
    assert run() == ("True", 1, 0)  # found there
    from mixsweep.train.compile_cache import cache_folder, use_shared_cache

    assert any(cache_folder(shared, torch.device("cpu")).iterdir())
    # A cache folder the user chose is theirs.
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert use_shared_cache(tmp_path / "other", torch.device("cpu")) is None
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "mine") and not (tmp_path / "other").exists()


# --- the levers: each a switch, each checked against eager / torch's own choice ------------------------

def test_a_pinned_attention_kernel_is_the_one_the_model_runs_and_agrees_with_math(inputs):
    from mixsweep.errors import MixsweepError
    from mixsweep.train.loop import attention_kernel, check_attention_kernel

    torch.manual_seed(0)
    model = build_mae("tiny", norm_pix_loss=True)
    x, _ = inputs
    noise = torch.rand(x.shape[0], model.preset.num_patches, generator=torch.Generator().manual_seed(1))

    def step(kernel):
        def run():
            with attention_kernel(kernel):
                return model(x, mask_ratio=0.75, noise=noise)[0]
        return loss_and_grads(model, run)

    assert_close(step("math"), step("flash"), rtol=1e-4, atol=1e-5)
    with pytest.raises(RuntimeError):  # the pin reaches the model's attention: no such kernel on a CPU
        step("efficient")
    with pytest.raises(MixsweepError, match=r"run.attention: 'efficient' has no kernel on cpu"):
        check_attention_kernel("efficient", torch.device("cpu"))


def test_a_spec_passes_its_step_switches_to_every_stage(tmp_path):
    from mixsweep.errors import MixsweepError
    from mixsweep.spec import parse_spec
    from mixsweep.sweep.plan import build_plan
    from mixsweep.sweep.store import Store

    base = {"name": "s", "grid": {"animal_fractions": [0.0], "finetune_fractions": [1.0], "seeds": [0]},
            "data": {"synth": {"scale": "small"}}, "preset": "tiny", "storage": str(tmp_path), "mixture": {"size": 20}}
    plain = build_plan(parse_spec(base), Store(tmp_path))
    spec = parse_spec({**base, "compile": True, "compile_mode": "reduce-overhead", "attention": "flash"})
    plan = build_plan(spec, Store(tmp_path))
    assert {(s.job.run.compile, s.job.run.compile_mode, s.job.run.attention) for s in plan.stages} == {
        (True, "reduce-overhead", "flash")}
    assert [s.key for s in plan.stages] == [s.key for s in plain.stages]  # how a step runs is not what it trains
    with pytest.raises(MixsweepError, match="compile_mode"):
        parse_spec({**base, "compile_mode": "fastest"})


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _cuda_mae(inputs):
    """A tiny MAE on the GPU, its batch and a fixed masking noise."""
    torch.manual_seed(0)
    model = build_mae("tiny", norm_pix_loss=True).cuda()
    x = inputs[0].cuda()
    gen = torch.Generator("cuda").manual_seed(1)
    return model, x, torch.rand(x.shape[0], model.preset.num_patches, device="cuda", generator=gen)


@cuda
@pytest.mark.parametrize("mode", ["reduce-overhead", "max-autotune-no-cudagraphs"])
def test_compile_modes_match_eager_on_cuda(inputs, mode):
    model, x, noise = _cuda_mae(inputs)
    eager = loss_and_grads(model, lambda: model(x, mask_ratio=0.75, noise=noise)[0])
    compiled_model = torch.compile(model, mode=mode)
    for _ in range(3):  # CUDA graphs record after warm-up runs: compare a replayed step
        compiled = loss_and_grads(model, lambda: compiled_model(x, mask_ratio=0.75, noise=noise)[0])
    assert_close(eager, compiled, rtol=1e-3, atol=1e-4)


@cuda
@pytest.mark.parametrize("kernel", ["flash", "efficient", "cudnn"])
def test_attention_kernels_match_math_on_cuda(inputs, kernel):
    from mixsweep.train.loop import attention_kernel, autocast

    model, x, noise = _cuda_mae(inputs)

    def step(name):
        def run():
            with autocast(x.device), attention_kernel(name):
                return model(x, mask_ratio=0.75, noise=noise)[0]
        return loss_and_grads(model, run)

    assert_close(step("math"), step(kernel), rtol=2e-2, atol=2e-3)  # bf16 kernels: reassociation in bf16
