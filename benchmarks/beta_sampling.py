"""Cost of BatchMixup's Beta sampling and mixing policy vs one encoder step.

BatchMixup draws an ``n x d x b`` policy of Beta(alpha, alpha) entries every step (32 x 384 x 32
for MiniLM, 32 x 1024 x 32 for RoBERTa-large). This script measures, in one process with the
candidates interleaved (A, B, C, A, B, C, ... medians over ``--repeats`` rounds):

1. Samplers, per alpha: ``before`` (the original ``trainers.strategies.sample_beta``:
   ``torch.full`` concentration + ``torch._standard_gamma`` on ``(2, *shape)``, kept here
   verbatim), ``cached_gamma`` (same, concentration buffer cached per (shape, alpha, device)),
   ``dist_gamma`` (``torch.distributions.Gamma``), ``marsaglia_tsang`` (vectorised
   Marsaglia-Tsang Gamma from ``torch.randn``/``torch.rand`` with the alpha < 1 boost, ratio in
   log space), and ``after`` (the current ``trainers.strategies.sample_beta``: exact symmetric
   Beta samplers from ``torch.rand``: uniform, arcsine, Ulrich's polar method, Johnk).
2. The whole per-step policy cost (sample + softmax + the two einsums of Eq. 3-4) with the
   ``before`` and ``after`` samplers, as a share of one encoder step (forward + backward of
   the model on one ``b x max_length`` batch, bf16 autocast on CUDA).
3. Correctness of every sampler: mean, variance (vs 1 / (4 (2 alpha + 1))), a KS statistic on
   [0, 1/2] against the Beta CDF (scipy, when installed; the upper half is excluded because
   float32 rounds draws within 2^-24 of 1 to 1.0 for small alpha, for every sampler) and
   determinism under ``torch.manual_seed``.

Run (2-core CPU: about a minute)::

    HF_HUB_OFFLINE=1 python -m benchmarks.beta_sampling
    python -m benchmarks.beta_sampling --device cuda --model random:roberta-large --max-length 128

Read: ``speedup`` is before / method (>1 = faster than before); ``policy % of step`` is the
per-step policy cost divided by the encoder step (what BatchMixup adds to an epoch, minus the
loss); ``KS ok`` compares the statistic with the 1% critical value 1.63 / sqrt(N).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from benchmarks._common import hardware_line, median, pick_device, table, timed
from trainers.strategies import mix_batch, sample_beta

Sampler = Callable[[float, tuple[int, ...], torch.device], Tensor]


# ---------------------------------------------------------------- candidate samplers
def before(alpha: float, shape: tuple[int, ...], device: torch.device) -> Tensor:
    """The original ``sample_beta`` (commit 50caafc), verbatim."""
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    if alpha == 1.0:
        return torch.rand(shape, device=device)
    concentration = torch.full((2, *shape), float(alpha), device=device)
    gammas = torch._standard_gamma(concentration)
    total = gammas[0] + gammas[1]
    return torch.where(total > 0, gammas[0] / total.clamp_min(torch.finfo(total.dtype).tiny),
                       (torch.rand(shape, device=device) < 0.5).to(total.dtype))


_BUFFERS: dict[tuple, Tensor] = {}


def _concentration(alpha: float, shape: tuple[int, ...], device: torch.device) -> Tensor:
    key = (tuple(shape), float(alpha), str(device))
    if key not in _BUFFERS:
        _BUFFERS[key] = torch.full((2, *shape), float(alpha), device=device)
    return _BUFFERS[key]


def cached_gamma(alpha: float, shape: tuple[int, ...], device: torch.device) -> Tensor:
    """``before`` with the concentration tensor cached per (shape, alpha, device)."""
    if alpha == 1.0:
        return torch.rand(shape, device=device)
    gammas = torch._standard_gamma(_concentration(alpha, shape, device))
    total = gammas[0] + gammas[1]
    return torch.where(total > 0, gammas[0] / total.clamp_min(torch.finfo(total.dtype).tiny),
                       (torch.rand(shape, device=device) < 0.5).to(total.dtype))


def dist_gamma(alpha: float, shape: tuple[int, ...], device: torch.device) -> Tensor:
    """``torch.distributions.Gamma(alpha, 1)`` for both gammas."""
    if alpha == 1.0:
        return torch.rand(shape, device=device)
    conc = _concentration(alpha, shape, device)
    gammas = torch.distributions.Gamma(conc, torch.ones((), device=device)).sample()
    total = gammas[0] + gammas[1]
    return torch.where(total > 0, gammas[0] / total.clamp_min(torch.finfo(total.dtype).tiny),
                       (torch.rand(shape, device=device) < 0.5).to(total.dtype))


def _log_gamma_mt(alpha: float, count: int, device: torch.device) -> Tensor:
    """log of ``count`` Gamma(alpha, 1) draws: Marsaglia & Tsang (2000), vectorised rejection.

    alpha < 1 uses the boost ``G(alpha) = G(alpha + 1) * U^(1 / alpha)`` (in log space, so
    tiny alphas do not underflow).
    """
    a = alpha + 1.0 if alpha < 1 else alpha
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    out = torch.empty(count, device=device)
    pending = None
    todo = count
    while todo:
        x = torch.randn(todo, device=device)
        v = (1.0 + c * x) ** 3
        u = torch.rand(todo, device=device)
        ok = (v > 0) & (torch.log(u) < 0.5 * x * x + d - d * v + d * torch.log(v.clamp_min(1e-30)))
        logs = math.log(d) + torch.log(v.clamp_min(1e-30))
        if pending is None:
            out.copy_(logs)
            pending = (~ok).nonzero().squeeze(1)
        else:
            out[pending[ok]] = logs[ok]
            pending = pending[~ok]
        todo = pending.numel()
    if alpha < 1:
        out += torch.log1p(-torch.rand(count, device=device)) / alpha
    return out


def marsaglia_tsang(alpha: float, shape: tuple[int, ...], device: torch.device) -> Tensor:
    """Beta as ``sigmoid(log G1 - log G2)`` with Marsaglia-Tsang gammas."""
    if alpha == 1.0:
        return torch.rand(shape, device=device)
    n = math.prod(shape)
    logs = _log_gamma_mt(alpha, 2 * n, device)
    return torch.sigmoid(logs[:n] - logs[n:]).view(shape)


def after(alpha: float, shape: tuple[int, ...], device: torch.device) -> Tensor:
    """The current ``trainers.strategies.sample_beta``."""
    return sample_beta(alpha, shape, device=device)


SAMPLERS: dict[str, Sampler] = {
    "before": before,
    "cached_gamma": cached_gamma,
    "dist_gamma": dist_gamma,
    "marsaglia_tsang": marsaglia_tsang,
    "after": after,
}


# ---------------------------------------------------------------- checks
def check(sampler: Sampler, alpha: float, device: torch.device, n: int) -> dict[str, object]:
    torch.manual_seed(123)
    x = sampler(alpha, (n,), device)
    torch.manual_seed(123)
    same = bool(torch.equal(x, sampler(alpha, (n,), device)))
    x = x.double().cpu()
    out: dict[str, object] = {
        "mean": float(x.mean()), "var": float(x.var()),
        "in01": bool(((x >= 0) & (x <= 1)).all()), "deterministic": same,
    }
    try:
        from scipy import stats
    except ImportError:
        out["ks"] = None
        return out
    xs = torch.sort(x).values.numpy()
    cdf = stats.beta(alpha, alpha).cdf(xs)
    i = torch.arange(1, n + 1, dtype=torch.float64).numpy()
    low = xs < 0.5
    out["ks"] = float(max((i / n - cdf)[low].max(), (cdf - (i - 1) / n)[low].max()))
    return out


# ---------------------------------------------------------------- encoder step
def encoder_step_fn(model_name: str, batch: int, length: int, device: torch.device):
    """(forward+backward closure, hidden size) for one ``batch x length`` batch."""
    from trainers.model import CellModel, load_encoder

    enc = load_encoder(model_name, seed=0)
    model = CellModel(enc.hidden_size, 2, enc.model, enc.pooling).to(device).train()
    gen = torch.Generator().manual_seed(0)
    inputs = {
        "input_ids": torch.randint(1000, 20000, (batch, length), generator=gen).to(device),
        "attention_mask": torch.ones(batch, length, dtype=torch.long, device=device),
    }
    targets = torch.randint(0, 2, (batch,), generator=gen).to(device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step() -> None:
        model.zero_grad(set_to_none=True)
        with autocast:
            loss = F.cross_entropy(model.scores(model.represent(inputs)).float(), targets)
        loss.backward()

    return step, enc.hidden_size


def policy_fn(sampler: Sampler, alpha: float, n: int, d: int, b: int, device: torch.device):
    """Sample + softmax + the two einsums (Eq. 3-4) of one BatchMixup step."""
    gen = torch.Generator().manual_seed(1)
    v = torch.randn(b, d, generator=gen).to(device)
    w = torch.randn(b, d, generator=gen).to(device)
    onehot = F.one_hot(torch.randint(0, 2, (b,), generator=gen), 2).float().to(device)

    def run() -> None:
        weights = torch.softmax(sampler(alpha, (n, d, b), device), dim=-1)
        mix_batch(weights, v, w, onehot)

    return run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm",
                        help="encoder for the step cost (minilm, random:roberta-large, ...)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--batch-size", type=int, default=32, help="b")
    parser.add_argument("--n-points", type=int, default=0, help="n (0 = batch size)")
    parser.add_argument("--max-length", type=int, default=64, help="sequence length of a step")
    parser.add_argument("--alphas", default="0.2,0.5,1.0,2.0")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved rounds (median)")
    parser.add_argument("--calls", type=int, default=3, help="sampler calls per timing")
    parser.add_argument("--check-draws", type=int, default=200_000,
                        help="draws per sampler/alpha for the correctness checks (0: skip)")
    args = parser.parse_args(argv)

    device = pick_device(args.device)
    alphas = [float(a) for a in args.alphas.split(",")]
    b = args.batch_size
    n = args.n_points or b
    print(hardware_line(device))
    step, d = encoder_step_fn(args.model, b, args.max_length, device)
    print(f"model {args.model} (d={d}), b={b}, n={n}, max_length={args.max_length}, "
          f"policy {n} x {d} x {b} = {n * d * b:,} Beta draws/step, repeats {args.repeats}\n")

    samplers = {(name, a): (lambda f=f, a=a: f(a, (n, d, b), device))
                for a in alphas for name, f in SAMPLERS.items()}
    policies = {(name, a): policy_fn(SAMPLERS[name], a, n, d, b, device)
                for a in alphas for name in ("before", "after")}
    # Warm-up (allocator, kernels, lazy init) before any timing.
    step()
    for fn in (*samplers.values(), *policies.values()):
        fn()

    t_step: list[float] = []
    t_sample: dict[tuple[str, float], list[float]] = {k: [] for k in samplers}
    t_policy: dict[tuple[str, float], list[float]] = {k: [] for k in policies}
    for _ in range(args.repeats):
        t_step.append(timed(step, device))
        for key, fn in samplers.items():
            t_sample[key].append(timed(fn, device, args.calls))
        for key, fn in policies.items():
            t_policy[key].append(timed(fn, device, args.calls))
    step_s = median(t_step)
    print(f"encoder step (forward+backward, {b} x {args.max_length}): {step_s * 1e3:.1f} ms\n")

    rows = []
    for a in alphas:
        base = median(t_sample[("before", a)])
        for name in SAMPLERS:
            s = median(t_sample[(name, a)])
            rows.append([a, name, f"{s * 1e3:.2f}", f"{base / s:.2f}x",
                         f"{100 * s / step_s:.2f}%"])
    print("Beta sampler, one n x d x b policy")
    print(table(["alpha", "sampler", "median ms", "speedup vs before", "% of encoder step"],
                rows))

    rows = []
    for a in alphas:
        pb = median(t_policy[("before", a)])
        pa = median(t_policy[("after", a)])
        rows.append([a, f"{pb * 1e3:.2f}", f"{pa * 1e3:.2f}", f"{pb / pa:.2f}x",
                     f"{100 * pb / step_s:.2f}%", f"{100 * pa / step_s:.2f}%"])
    print("\nPer-step policy cost: sample + softmax + two einsums (Eq. 3-4)")
    print(table(["alpha", "before ms", "after ms", "speedup", "before % of step",
                 "after % of step"], rows))

    if args.check_draws:
        crit = 1.63 / math.sqrt(args.check_draws)
        rows = []
        for a in alphas:
            var = 1 / (4 * (2 * a + 1))
            for name, f in SAMPLERS.items():
                c = check(f, a, device, args.check_draws)
                ks = c["ks"]
                rows.append([a, name, f"{c['mean']:.4f}", f"{c['var']:.5f}", f"{var:.5f}",
                             "-" if ks is None else f"{ks:.4f}",
                             "-" if ks is None else ("yes" if ks < crit else "NO"),
                             "yes" if c["in01"] else "NO",
                             "yes" if c["deterministic"] else "NO"])
        print(f"\nCorrectness, {args.check_draws:,} draws (mean 0.5; KS on [0, 1/2], "
              f"1% critical value {crit:.4f})")
        print(table(["alpha", "sampler", "mean", "var", "exact var", "KS", "KS ok", "in [0,1]",
                     "seeded repeat"], rows))


if __name__ == "__main__":
    main()
