"""dcnn's ``unet`` preset and its PyTorch twin on fashion-mosaic: same network, weights, data and recipe.

    python scripts/unet_torch.py --steps 10              # per-step time of both, interleaved (a ratio)
    python scripts/unet_torch.py                         # PyTorch trains the whole recipe (one JSON line)
    python scripts/unet_torch.py --framework dcnn        # dcnn trains it, the same way
    python scripts/unet_torch.py --epochs 1 --limit 2000 --json out.json
    python scripts/unet_torch.py --layers 10             # each convolution's forward + backward, both, interleaved

The data are the files ``dcnn.data.mosaic`` writes (made on first use from Fashion-MNIST): 12,000
training and 2,000 test mosaics of 56x56, 11 classes (background and the 10 garments).

The network is ``dcnn.model.presets.unet`` (the ``unet`` preset's builder) with its seeded initial
weights; PyTorch runs ``dcnn.io.torch_model.to_torch`` of it with those weights loaded.  3x3
convolutions (padding 1, no bias) each followed by BatchNorm and ReLU, 2x2 max-pooling, 2x2 stride-2
transposed convolutions (or nearest 2x upsampling and a 3x3 convolution: ``--up upsample``),
concatenated skips and a 1x1 convolution to the classes:

    56x56: block(1 -> c) ----------------------------------------- concat -> block(2c -> c) -> 1x1 -> 11
    28x28:    pool, block(c -> 2c) --------------------- concat -> block(4c -> 2c) -> up
    14x14:       pool, block(2c -> 4c) ------- concat -> block(8c -> 4c) -> up
     7x7:           pool, block(4c -> 8c) -> up

where block(a -> b) is two conv-BN-ReLU layers (a -> b, b -> b).  The recipe is the preset's: Adam,
batch 32, dcnn's one-cycle schedule per step (``dcnn.train.callbacks.one_cycle``: warm-up over 15%
of the steps from lr/10, cosine decay to lr/100), cross-entropy, no augmentation, 2 threads, the
batch order of dcnn's shuffle stream (seeded).  Both frameworks' steps are the same work: forward,
per-pixel cross-entropy, backward, an Adam step (dcnn's at the layer level: Graph.apply/backprop,
dcnn.model.losses.CrossEntropy, dcnn.model.optimizers.Adam, not DCNNetwork.fit).

Measured with the earlier hand-written torch module (torch's default initialisation, torch 2.13 CPU,
2 threads, a shared 2-core Xeon VM at load 4-7, seed 0), after 4 epochs: base 16 (482,619
parameters): test pixel accuracy 0.9525, mIoU 0.8091 (0.591, 0.746, 0.791, 0.809 by epoch); base 8
(121,123): 0.9330 and 0.7490.  Base 16's median step was 110 ms in its quietest epoch.

Metrics are computed on the test mosaics after each epoch: pixel accuracy and mean IoU as
``dcnn.model.metrics`` defines them (torchmetrics' MulticlassAccuracy(micro) and
MulticlassJaccardIndex(macro), from a confusion matrix), and per-class IoU at the end.
Times: ``train_s`` is the wall time of the training steps alone.  On a shared machine other
processes stretch some steps many times over, so ``median_train_s`` (steps x the median step)
and ``quietest_train_s`` (steps x the lowest of the epochs' median steps) estimate the same run
on idle cores.  ``--steps N`` alternates steps (dcnn, torch, torch, dcnn, ...) on random batches,
so load from other processes falls on both alike, after 3 untimed warm-up steps each.

Every summary records the kernels each framework ran (``kernels``): the core NumPy's OpenBLAS picked
(``OPENBLAS_CORETYPE`` overrides its choice), torch's ATen CPU capability and the cap on oneDNN's
instruction set (``ONEDNN_MAX_CPU_ISA``), since a pin on one side and not the other (say OpenBLAS's
AVX2 kernels against oneDNN's AVX-512) decides the ratio more than either framework does.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", type=int, default=16, help="channels at full resolution (c)")
    p.add_argument("--up", choices=("transpose", "upsample"), default="transpose")
    p.add_argument("--steps", type=int, default=0, help="timed steps per framework, interleaved (no job)")
    p.add_argument("--layers", type=int, default=0,
                   help="timed forward + backward passes of each convolution alone, interleaved (no job)")
    p.add_argument("--framework", choices=("torch", "dcnn"), default="torch", help="which one trains the job")
    p.add_argument("--backend", default="numpy", help="dcnn's backend")
    p.add_argument("--epochs", type=int, default=None, help="default: the preset's (4)")
    p.add_argument("--batch-size", type=int, default=None, help="default: the preset's (32)")
    p.add_argument("--lr", type=float, default=None, help="default: the preset's (3e-3)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="AdamW's when > 0, else plain Adam")
    p.add_argument("--schedule", choices=("onecycle", "constant"), default=None, help="default: the preset's")
    p.add_argument("--limit", type=int, default=None, help="train on the first N mosaics only")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--json", default=None, help="write the summary here too")
    args = p.parse_args(argv)
    _threads(args.threads)                 # before NumPy, OpenBLAS and Numba are imported
    from dcnn.model import presets
    preset = presets.get_preset("unet")
    for name, value in (("epochs", preset.epochs), ("batch_size", preset.batch_size), ("lr", preset.lr),
                        ("schedule", preset.schedule)):
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def _threads(n: int) -> None:
    # dcnn's backend gives Numba's pool the same count; NUMBA_NUM_THREADS itself is left alone, since
    # Numba re-reads it whenever it compiles and refuses a change once its pool is up (the tests call main).
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)


def kernels() -> dict:
    """The CPU kernels each side runs, for the record (printed on stderr too)."""
    import torch
    from backends import openblas
    found = {"openblas": openblas.corename() or "none", "torch": torch.backends.cpu.get_cpu_capability(),
             "onednn_max_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "unset")}
    print("kernels: dcnn's OpenBLAS {openblas}, torch's ATen {torch}, oneDNN's cap {onednn_max_isa}".format(**found),
          file=sys.stderr)
    return found


def load(data_dir=None):
    """Host arrays: float32 images (N, 1, 56, 56) in [0, 1] and uint8 masks (N, 56, 56) per split."""
    import numpy as np
    from dcnn.data import mosaic
    from dcnn.utils.files import load_arrays
    arrays, _ = load_arrays(mosaic.ensure(data_dir))
    x = {s: arrays[f"x_{s}"][:, None].astype(np.float32) / np.float32(255) for s in ("train", "test")}
    return x, {s: arrays[f"y_{s}"] for s in ("train", "test")}


def build(args, classes: int = 11):
    """The dcnn network (numbered as the preset builds it) and its torch twin with the same weights."""
    from dcnn.io.torch_model import load_into_torch, to_torch
    from dcnn.model import presets
    from dcnn.model.network import DCNNetwork
    inputs, outputs = presets.unet((1, 56, 56), classes, width=args.base, up=args.up)
    net = DCNNetwork(inputs=inputs, outputs=outputs, seed=args.seed, backend=args.backend).build()
    module = to_torch(net.model)
    load_into_torch(module, net.state_dict())
    return net, module


class DcnnTrainer:
    """One step is what DCNNetwork.train_on_batch does (less its accuracy count), at the layer level."""

    def __init__(self, net, args):
        from dcnn.model.losses import CrossEntropy
        from dcnn.model.optimizers import Adam, AdamW
        self.net, self.loss = net, CrossEntropy()
        self.optimizer = AdamW(lr=args.lr, weight_decay=args.weight_decay) if args.weight_decay else Adam(lr=args.lr)
        self.refs = [(layer, name) for _, layer in net.model.named_modules() for name in layer.params]

    def step(self, x, y, lr):
        """x, y: host batches; returns the loss (a float: one sync, as torch's loss.item())."""
        backend, model = self.net.backend, self.net.model
        self.optimizer.lr = lr
        model.train(True)
        logits, saved = model.apply(backend.from_numpy(x))
        loss = self.loss.forward(logits, backend.from_numpy(y.astype("int64")))
        del logits
        model.zero_grad()
        model.backprop(self.loss.backward(), saved)
        params = self.net.flat_parameters()
        self.optimizer.step(params, params.gather([layer.grads[name] for layer, name in self.refs]))
        return float(loss)

    def predict(self, x):
        self.net.model.train(False)
        return self.net.backend.to_numpy(self.net.model.apply(self.net.backend.from_numpy(x))[0]).argmax(1)


class TorchTrainer:
    def __init__(self, module, args):
        import torch
        self.torch, self.module = torch, module
        self.optimizer = (torch.optim.AdamW(module.parameters(), lr=args.lr, weight_decay=args.weight_decay)
                          if args.weight_decay else torch.optim.Adam(module.parameters(), lr=args.lr))

    def step(self, x, y, lr):
        torch = self.torch
        self.module.train()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(self.module(torch.from_numpy(x)), torch.from_numpy(y).long())
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def predict(self, x):
        self.module.eval()
        with self.torch.inference_mode():
            return self.module(self.torch.from_numpy(x)).argmax(1).numpy()


def confusion(trainer, x, y, classes: int, batch: int = 250):
    import numpy as np
    counts = np.zeros(classes * classes, np.int64)
    for start in range(0, len(x), batch):
        pred = trainer.predict(x[start:start + batch]).ravel()
        true = y[start:start + batch].astype(np.int64).ravel()
        counts += np.bincount(true * classes + pred, minlength=classes * classes)
    return counts.reshape(classes, classes)


def scores(counts) -> dict:
    import numpy as np
    counts = counts.astype(np.float64)
    tp = np.diag(counts)
    union = counts.sum(0) + counts.sum(1) - tp
    iou = np.divide(tp, union, out=np.zeros_like(tp), where=union > 0)
    present = counts.sum(0) + counts.sum(1) > 0
    return {"pixel_accuracy": float(tp.sum() / counts.sum()), "miou": float(iou[present].mean()),
            "iou": [round(float(v), 4) for v in iou]}


def compare_steps(args) -> dict:
    import numpy as np
    import torch
    torch.set_num_threads(args.threads)
    net, module = build(args)
    net.backend.warm_up()
    trainers = {"dcnn": DcnnTrainer(net, args), "torch": TorchTrainer(module, args)}
    x, y = load(args.data_dir)
    rng = np.random.default_rng(args.seed)
    times = {"dcnn": [], "torch": []}
    for i in range(args.steps + 3):                 # the first three are warm-up
        idx = np.sort(rng.choice(len(y["train"]), args.batch_size, replace=False))
        xb, yb = x["train"][idx], y["train"][idx]
        for who in (("dcnn", "torch") if i % 2 == 0 else ("torch", "dcnn")):
            t = time.perf_counter()
            trainers[who].step(xb, yb, args.lr)
            if i >= 3:
                times[who].append(time.perf_counter() - t)
    med = {k: float(np.median(v)) for k, v in times.items()}
    result = {"model": f"unet-{args.base}-{args.up}", "batch": args.batch_size, "steps": args.steps,
              "threads": args.threads, "dcnn_step_ms": med["dcnn"] * 1000, "torch_step_ms": med["torch"] * 1000,
              "dcnn_over_torch": med["dcnn"] / med["torch"], "load_average": os.getloadavg()[0],
              "kernels": kernels()}
    print(f"unet-{args.base}: batch {args.batch_size}, {args.steps} steps each, {args.threads} threads, median "
          f"training step: dcnn {result['dcnn_step_ms']:.1f} ms, torch {result['torch_step_ms']:.1f} ms, "
          f"dcnn / torch = {result['dcnn_over_torch']:.2f}", file=sys.stderr)
    print(json.dumps(result))
    return result


def compare_layers(args) -> dict:
    """Each convolution of the network alone, forward and backward on a random batch: dcnn's layer
    (its activations channels-last, as in a step) against torch's functional twin (NCHW, as the twin
    runs), alternating, median of ``--layers`` passes after 2 warm-ups.  Where a step's time goes."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(args.threads)
    net, _ = build(args)
    net.backend.warm_up()
    net.model.train(True)
    rng = np.random.default_rng(args.seed)
    rows = []
    for key, layer in net.model.named_modules():
        kind = type(layer).__name__
        if kind not in ("Conv2D", "Conv2DTranspose"):
            continue
        c, h, w = layer.input_shape
        x = rng.standard_normal((args.batch_size, h, w, c), dtype=np.float32).transpose(0, 3, 1, 2)
        y, saved = layer.apply(x)
        dy = rng.standard_normal(y.shape[:1] + y.shape[2:] + y.shape[1:2], dtype=np.float32).transpose(0, 3, 1, 2)
        weight = torch.from_numpy(np.asarray(layer.params["weight"])).requires_grad_(True)
        xt = torch.from_numpy(np.ascontiguousarray(x)).requires_grad_(layer.needs_input_grad)
        dyt = torch.from_numpy(np.ascontiguousarray(dy))
        conv = F.conv2d if kind == "Conv2D" else F.conv_transpose2d
        options = {"stride": layer.stride, "padding": layer.padding}
        if kind == "Conv2DTranspose":
            options["output_padding"] = layer.output_padding

        same = conv(xt, weight, None, **options).detach().numpy()     # the same work: the same outputs
        if not np.allclose(same, y, rtol=1e-4, atol=1e-4):
            raise AssertionError(f"{key}: dcnn's and torch's outputs differ by {np.abs(same - y).max():g}")

        def dcnn_pass(layer=layer, x=x, dy=dy):
            layer.zero_grad()
            out, kept = layer.apply(x)
            layer.backprop(dy, kept)

        def torch_pass(conv=conv, xt=xt, weight=weight, dyt=dyt, options=options):
            weight.grad = xt.grad = None
            conv(xt, weight, None, **options).backward(dyt)

        times = {"dcnn": [], "torch": []}
        for i in range(args.layers + 2):
            for who, run in (("dcnn", dcnn_pass), ("torch", torch_pass))[::1 if i % 2 else -1]:
                t = time.perf_counter()
                run()
                if i >= 2:
                    times[who].append(time.perf_counter() - t)
        ms = {k: float(np.median(v)) * 1000 for k, v in times.items()}
        rows.append({"layer": key, "kind": kind, "in": [c, h, w], "out": list(y.shape[1:]),
                     "dcnn_ms": ms["dcnn"], "torch_ms": ms["torch"], "dcnn_over_torch": ms["dcnn"] / ms["torch"]})
        shape = f"{c} -> {y.shape[1]} at {h}x{w}" + ("" if kind == "Conv2D" else ", transposed")
        print(f"{key:20s} {shape:34s} dcnn {ms['dcnn']:6.2f} ms  torch {ms['torch']:6.2f} ms  "
              f"{ms['dcnn'] / ms['torch']:.2f}", file=sys.stderr)
    total = {k: sum(r[f"{k}_ms"] for r in rows) for k in ("dcnn", "torch")}
    print(f"all convolutions: dcnn {total['dcnn']:.1f} ms, torch {total['torch']:.1f} ms, "
          f"dcnn / torch = {total['dcnn'] / total['torch']:.2f}", file=sys.stderr)
    result = {"model": f"unet-{args.base}-{args.up}", "batch": args.batch_size, "threads": args.threads,
              "passes": args.layers, "layers": rows, "dcnn_ms": total["dcnn"], "torch_ms": total["torch"],
              "dcnn_over_torch": total["dcnn"] / total["torch"], "kernels": kernels()}
    print(json.dumps(result))
    return result


def job(args) -> dict:
    """The whole recipe in one framework; progress on stderr, one JSON line (the summary) on stdout."""
    import numpy as np
    import torch
    from dcnn.data import mosaic
    from dcnn.train.callbacks import one_cycle
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    net, module = build(args, len(mosaic.CLASSES))
    if args.framework == "dcnn":
        net.backend.warm_up()
    trainer = DcnnTrainer(net, args) if args.framework == "dcnn" else TorchTrainer(module, args)
    x, y = load(args.data_dir)
    xtr, ytr = x["train"][:args.limit], y["train"][:args.limit]
    n, b = len(xtr), args.batch_size
    steps = -(-n // b)
    total = steps * args.epochs
    step_times, history, epoch_medians = [], [], []
    log = lambda text: print(text, file=sys.stderr, flush=True)
    log(f"{args.framework}: U-Net base {args.base} ({net.model.param_count():,} parameters, {args.up}), {n} training "
        f"mosaics, batch {b}, lr {args.lr} {args.schedule}, {args.epochs} epochs, {args.threads} threads")
    for epoch in range(args.epochs):
        order = net.shuffle_rng.permutation(n)       # dcnn's batch order, for both frameworks
        loss_sum = 0.0
        for step in range(steps):
            t0 = time.perf_counter()
            idx = np.sort(order[step * b:(step + 1) * b])
            lr = one_cycle(args.lr, (epoch * steps + step) / total) if args.schedule == "onecycle" else args.lr
            loss_sum += trainer.step(xtr[idx], ytr[idx], lr) * len(idx)
            step_times.append(time.perf_counter() - t0)
        train_s = sum(step_times)
        epoch_medians.append(float(np.median(step_times[-steps:])))
        result = scores(confusion(trainer, x["test"], y["test"], len(mosaic.CLASSES)))
        history.append({"epoch": epoch + 1, "loss": loss_sum / n, "test_pixel_accuracy": result["pixel_accuracy"],
                        "test_miou": result["miou"], "train_s": train_s})
        log(f"epoch {epoch + 1}: loss {loss_sum / n:.4f}  test pixel accuracy {result['pixel_accuracy']:.4f}  "
            f"mIoU {result['miou']:.4f}  ({train_s:.0f} s training, median step {epoch_medians[-1] * 1000:.0f} ms)")
    summary = {"framework": args.framework, "model": f"unet-{args.base}-{args.up}",
               "parameters": net.model.param_count(), "args": vars(args), "train_mosaics": n,
               "steps": len(step_times), "train_s": sum(step_times),
               "median_train_s": float(np.median(step_times)) * len(step_times),
               "quietest_train_s": min(epoch_medians) * len(step_times),
               "epoch_median_step_ms": [round(m * 1000, 1) for m in epoch_medians],
               "seconds": time.perf_counter() - started, "test_pixel_accuracy": result["pixel_accuracy"],
               "test_miou": result["miou"], "test_iou": dict(zip(mosaic.CLASSES, result["iou"])), "history": history,
               "torch": torch.__version__, "kernels": kernels()}
    log("per-class IoU: " + ", ".join(f"{k} {v:.3f}" for k, v in summary["test_iou"].items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)
    print(json.dumps(summary))
    return summary


def main(argv=None):
    sys.path.insert(0, ROOT)
    args = parse_args(argv)
    if args.layers:
        return compare_layers(args)
    return compare_steps(args) if args.steps else job(args)


if __name__ == "__main__":
    main()
