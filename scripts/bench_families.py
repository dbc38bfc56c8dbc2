"""Each override of issue 20's backend methods against the generic method it replaces, on the same
arrays and device: does the fused kernel pay?

    python scripts/bench_families.py                   # the CPU backend (Numba) against backends/ops
    python scripts/bench_families.py --device cuda     # CuPy's fused kernels against the generic path on CuPy
    python scripts/bench_families.py --json out.json --repeats 30

For every case: the forward and backward pass of the override and of the generic method
(``tests/helpers.generic``: the same namespace and device, only Backend's own methods), timed
alternately (override, generic, generic, override, ...) so that load from other processes falls
on both alike; the median of each and their ratio.  Shapes are those of the mobilenet preset at
batch 128 (and a few of the other layers' typical uses).  Methods without an override on the
backend are listed as such (the generic one is what runs).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def cases(rng, n):
    """(name, method, args maker, backward method) for typical shapes; args are host arrays."""
    f32 = lambda *shape: rng.standard_normal(shape).astype(np.float32)
    nhwc = lambda n_, c, h, w: f32(n_, h, w, c).transpose(0, 3, 1, 2)       # the layers' memory layout
    out = []
    for c, hw, stride in ((96, 14, 1), (96, 14, 2), (192, 7, 1), (16, 28, 2)):
        out.append((f"depthwise 3x3 C={c} {hw}x{hw} s{stride}", "depthwise_conv2d",
                    lambda c=c, hw=hw, s=stride: (nhwc(n, c, hw, hw), f32(c, 1, 3, 3), None, (s, s), (1, 1, 1, 1),
                                                  (1, 1)),
                    "depthwise_conv2d_backward"))
    out.append(("depthwise 7x7 C=64 14x14 (ConvNeXt)", "depthwise_conv2d",
                lambda: (nhwc(n, 64, 14, 14), f32(64, 1, 7, 7), f32(64), (1, 1), (3, 3, 3, 3), (1, 1)),
                "depthwise_conv2d_backward"))
    out.append(("grouped 3x3 g=4 64->64 14x14", "conv2d_grouped",
                lambda: (nhwc(n, 64, 14, 14), f32(64, 16, 3, 3), f32(64), (1, 1), (1, 1, 1, 1), (1, 1), 4),
                "conv2d_grouped_backward"))
    out.append(("transposed 4x4 s2 32->16 7x7", "conv_transpose2d",
                lambda: (nhwc(n, 32, 7, 7), f32(32, 16, 4, 4), f32(16), (2, 2), (1, 1), (0, 0), (1, 1), 1),
                "conv_transpose2d_backward"))
    for kind in ("silu", "gelu", "hardswish", "leaky_relu", "sigmoid"):
        out.append((f"activation {kind} 96x14x14", "activation", lambda k=kind: (nhwc(n, 96, 14, 14), k, 0.01),
                    "activation_backward"))
    out.append(("layer_norm 64x14x14", "layer_norm",
                lambda: (nhwc(n, 64, 14, 14), f32(64, 14, 14), f32(64, 14, 14), 1e-5), "layer_norm_backward"))
    out.append(("group_norm g=8 64x14x14", "group_norm",
                lambda: (nhwc(n, 64, 14, 14), f32(64), f32(64), 8, 1e-5), "group_norm_backward"))
    out.append(("upsample nearest x2 32x14x14", "upsample2d", lambda: (nhwc(n, 32, 14, 14), (2, 2), "nearest"),
                "upsample2d_backward"))
    out.append(("upsample bilinear x2 32x14x14", "upsample2d", lambda: (nhwc(n, 32, 14, 14), (2, 2), "bilinear"),
                "upsample2d_backward"))
    out.append(("global max pool 192x7x7", "global_max_pool2d", lambda: (nhwc(n, 192, 7, 7),),
                "global_max_pool2d_backward"))
    return out


def overridden(backend, name) -> bool:
    from backends.base import Backend
    return any(name in vars(cls) for cls in type(backend).__mro__ if cls not in Backend.__mro__)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeats", type=int, default=15, help="timed runs of each, alternating")
    p.add_argument("--only", help="cases whose name contains this")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    import backends
    from backends.base import Backend
    backend = backends.resolve("cupy" if args.device == "cuda" else "numpy")
    backend.warm_up()
    generic = Backend(backend.xp, device=backend.device)
    rng = np.random.default_rng(0)
    rows = []
    print(f"{backend.describe()}, batch {args.batch}: median ms of forward + backward, override vs generic")
    for name, method, make, backward in cases(rng, args.batch):
        if args.only and args.only not in name:
            continue
        host = make()
        dev = tuple(backend.from_numpy(np.ascontiguousarray(a)) if isinstance(a, np.ndarray) else a for a in host)
        if backend.name == "numpy":        # keep the channels-last memory the layers hand over
            dev = host
        if not overridden(backend, method):
            print(f"  {name:40s} no override here (the generic method runs)")
            rows.append({"case": name, "method": method, "override": False})
            continue

        def run(be):
            y, saved = getattr(be, method)(*dev)
            weight = (dev[1],) if "conv" in method else ()          # the convolutions' backward takes the weight
            getattr(be, backward)(y, saved, *weight)
            backend.synchronize()
        for be in (backend, generic):
            run(be)                                           # compile / warm up
        times = {"override": [], "generic": []}
        for i in range(args.repeats):
            for who in (("override", "generic") if i % 2 == 0 else ("generic", "override")):
                t = time.perf_counter()
                run(backend if who == "override" else generic)
                times[who].append((time.perf_counter() - t) * 1e3)
        med = {k: float(np.median(v)) for k, v in times.items()}
        rows.append({"case": name, "method": method, "override": True, **med,
                     "speedup": med["generic"] / med["override"]})
        print(f"  {name:40s} override {med['override']:8.2f}  generic {med['generic']:8.2f}  "
              f"x{med['generic'] / med['override']:.1f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"backend": backend.describe(), "batch": args.batch, "cases": rows},
                                              indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
