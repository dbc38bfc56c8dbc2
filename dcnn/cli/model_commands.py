"""``dcnn evaluate``, ``predict``, ``export`` and ``info``: trained models and the machine, reported."""
from __future__ import annotations

import json
import os
import platform

import numpy as np

from .common import EXIT_FAILED, error, read_model_images, use_backend

# --- evaluate -------------------------------------------------------------------------------------

def cmd_evaluate(args) -> int:
    from ..data import datasets
    from ..io.loading import load_trained, model_name, run_config
    from ..train.metrics import confusion_matrix, per_class_accuracy
    from . import segment_commands
    backend = use_backend(args.backend)
    net, meta, path = load_trained(args.weights, args.model, backend)
    name = args.dataset or meta.get("dataset")
    if name is None:
        raise ValueError(f"{path} does not say which dataset it was trained on; pass --dataset")
    data_dir = args.data_dir
    if data_dir is None and args.dataset is None:   # a run folder remembers where its data came from
        data_dir = run_config(path).get("data_dir")
    c, h, w = net.input_shape
    data = datasets.load(name, data_dir, image_size=(h, w), channels=c if c in (1, 3) else None)
    classes = list(meta["classes"])
    if data.input_shape != net.input_shape or data.num_classes != len(classes):
        raise ValueError(f"{path} was trained for inputs {net.input_shape} and {len(classes)} classes; "
                         f"{data.name} has {data.input_shape} and {data.num_classes}")
    segmentation = segment_commands.is_segmentation(net, meta)
    segment_commands.check_data_task(data, segmentation, path)
    if segmentation:
        return segment_commands.evaluate_segmentation(args, net, meta, path, data)
    probs = net.predict(data.x_test, batch_size=args.batch_size)
    predicted = np.argmax(probs, axis=1)
    cm = confusion_matrix(data.y_test, predicted, len(classes))
    per_class = per_class_accuracy(cm)
    accuracy = float(np.trace(cm) / cm.sum())
    if args.json:
        print(json.dumps({"weights": str(path), "dataset": data.name, "model": meta.get("preset"),
                          "name": model_name(meta, path),
                          "images": int(cm.sum()), "accuracy": accuracy,
                          "per_class_accuracy": dict(zip(classes, map(float, per_class))),
                          "confusion_matrix": cm.tolist(), "classes": classes}))
        return 0
    print(f"{path}: {model_name(meta, path)} on the {data.name} test set ({cm.sum():,} images)")
    print(f"accuracy: {accuracy:.4f}  ({int(np.trace(cm)):,}/{int(cm.sum()):,})")
    print()
    width = max(len(c) for c in classes)
    print("per-class accuracy:")
    for c, a in zip(classes, per_class):
        print(f"  {c:<{width}}  {a:.4f}")
    print()
    print("confusion matrix (rows: true class, columns: predicted):")
    cell = max(5, len(str(cm.max())) + 1)
    digits = len(str(len(classes) - 1))
    print(" " * (width + digits + 3) + "".join(f"{i:>{cell}}" for i in range(len(classes))))
    for i, (c, row) in enumerate(zip(classes, cm)):
        print(f"  {i:>{digits}} {c:<{width}}" + "".join(f"{v:>{cell}}" for v in row))
    return 0


# --- predict --------------------------------------------------------------------------------------

def cmd_predict(args) -> int:
    """Each image on its own: a file that cannot be read is reported and the rest go on (exit 1 at the end)."""
    from ..data.images import expand_image_paths
    from ..io.loading import load_trained
    from .segment_commands import is_segmentation, predict_segmentation
    backend = use_backend(args.backend)
    net, meta, path = load_trained(args.weights, args.model, backend)
    classes = list(meta["classes"])
    paths = expand_image_paths(args.images)
    if is_segmentation(net, meta):
        return predict_segmentation(args, net, meta, path, paths)
    if args.out is not None:
        raise ValueError(f"--out writes the masks of a segmentation model; {path} classifies whole images "
                         "(its predictions are printed)")
    images, good, failures = read_model_images(paths, net, args)
    probs = net.predict(np.stack(images)) if images else np.zeros((0, len(classes)), np.float32)
    top = min(args.top, len(classes))
    results = []
    for image, p in zip(good, probs):
        order = np.argsort(-p)[:top]
        results.append({"image": str(image), "top": [{"class": classes[i], "index": int(i),
                                                      "probability": float(p[i])} for i in order]})
    if args.json:
        print(json.dumps({"weights": str(path), "predictions": results, "errors": failures}))
    else:
        for r in results:
            print(f"{r['image']}: " + ", ".join(f"{t['class']} {t['probability']:.1%}" for t in r["top"]))
        if failures:
            error(f"{len(failures)} of {len(paths)} image(s) could not be read")
    return EXIT_FAILED if failures else 0


# --- export ---------------------------------------------------------------------------------------

def cmd_export(args) -> int:
    from ..io.export import export_onnx
    from ..io.loading import load_trained, model_name
    net, meta, path = load_trained(args.weights, args.model, use_backend("numpy"))
    try:
        out = export_onnx(net, args.out, classes=meta["classes"], logits=args.logits)
    except ImportError as exc:
        raise ValueError(str(exc)) from None
    print(f"{out}: {model_name(meta, path)} from {path}, input (N, {', '.join(map(str, net.input_shape))}), "
          f"{'logits' if args.logits else 'probabilities'} for {len(meta['classes'])} classes")
    return 0


# --- info -----------------------------------------------------------------------------------------

def _version(module: str):
    try:
        from importlib.metadata import version
        return version(module)
    except Exception:
        return None


def cmd_info(args) -> int:
    import backends

    from .. import __version__
    from ..data import datasets
    from ..model import presets
    backend = use_backend(args.backend)
    versions = {"dcnn": __version__, "python": platform.python_version(), "numpy": np.__version__}
    for dist in ("numba", "cupy-cuda13x", "cupy-cuda12x", "cupy", "array-api-compat", "safetensors", "tqdm", "pooch",
                 "pillow", "matplotlib"):
        v = _version(dist)
        if v:
            versions[dist] = v
    found = {}
    problems = []
    for name in datasets.names():
        try:
            folder, _ = datasets.locate(datasets.get_spec(name))
        except datasets.DatasetError as exc:     # e.g. $DCNN_DATA names a folder that does not exist
            folder = None
            if str(exc) not in problems:
                problems.append(str(exc))
        found[name] = str(folder) if folder else None
    info = {"backend": backend.name, "device": backend.describe(), "reason": backend.reason,
            "DCNN_BACKEND": os.environ.get("DCNN_BACKEND"), "available_backends": backends.available(),
            "versions": versions, "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "datasets": found, "cache": str(datasets.cache_dir()), "presets": list(presets.PRESETS),
            "data_problems": problems}
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"backend:   {backend.name}  ({info['reason']})")
    print(f"device:    {info['device']}")
    print(f"available: {', '.join(info['available_backends'])}  (choose with --backend or DCNN_BACKEND="
          f"{info['DCNN_BACKEND'] or 'auto'})")
    print(f"platform:  {info['platform']}, {info['cpu_count']} CPUs")
    print("versions:  " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print("datasets:  " + ", ".join(f"{k}: {v or 'not found (downloaded on first use)'}" for k, v in found.items()))
    print(f"presets:   {', '.join(f'{p} (default)' if p == presets.DEFAULT else p for p in presets.PRESETS)}")
    for problem in problems:
        print(f"note:      {problem}")
    return 0


