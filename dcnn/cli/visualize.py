"""``dcnn visualize``: the stage pictures of one image, plus filters (and results) of a model, as PNGs.

``dcnn.cli`` calls ``register(subparsers)``; the parsed arguments reach ``run(args)``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .args import add_custom_layers

EXAMPLES = """\
examples:
  dcnn visualize --model seed --index 0 --out figures/seed     # the seed's edge-filter demo
  dcnn visualize --model seed --image photo.jpg --out figures/photo
  dcnn visualize runs/fashion-mnist-convnet --index 7 --results   # a trained model (dcnn train)
  dcnn visualize my_model.safetensors --image photo.jpg          # exactly what dcnn predict classifies
"""


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "visualize", help="draw each layer's feature maps for one image (PNG files)",
        description="Run one image through a model layer by layer and write one PNG per stage (conv, "
                    "activation, pool, normalisation... up to Flatten) beside the image, plus the first "
                    "layer's filters; for a trained model also its training curves and, with --results, "
                    "a confusion matrix and misclassified test images (for a segmentation model: "
                    "segmentation.png, test images beside their true and predicted masks). Needs matplotlib: "
                    "pip install matplotlib (in a clone: pip install -e '.[plot]').",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("weights_arg", nargs="?", type=Path, metavar="MODEL",
                   help="a trained model: a run folder of `dcnn train` or a .safetensors file (net.save); "
                        "as in evaluate and predict")
    model = p.add_argument_group("model")
    model.add_argument("--weights", type=Path, help="the same as MODEL (kept for older scripts)")
    model.add_argument("--model", help="without --weights: 'seed', the notebook's fixed edge filters -> ReLU -> "
                                       "max-pool -> normalisation (the default, needs no training); with "
                                       "--weights: the preset, if the weights file does not say")
    model.add_argument("--max-activation", type=float, default=1.0,
                       help="the seed demo's ReLU firing cap (default: %(default)s, for pixels in [0, 1])")
    model.add_argument("--backend", choices=("numpy", "cupy", "auto"), type=str.lower,
                       help="default: $DCNN_BACKEND or auto")
    image = p.add_argument_group("image")
    image.add_argument("--dataset", help="dataset to take the image from (default: the one the weights were "
                                         "trained on, else fashion-mnist)")
    image.add_argument("--data-dir", type=Path, help="folder holding the dataset files")
    image.add_argument("--split", choices=("test", "train"), default="test", help="default: %(default)s")
    source = image.add_mutually_exclusive_group()
    source.add_argument("--index", type=int, default=0, help="which image of the split (default: %(default)s)")
    source.add_argument("--image", type=Path, help="a PNG/JPEG file instead of a dataset image (a trained "
                                                   "model gets it resized to its input)")
    image.add_argument("--invert", choices=("auto", "yes", "no"), default="auto",
                       help="as in dcnn predict: invert a light-background picture for a one-channel model")
    out = p.add_argument_group("output")
    add_custom_layers(model)
    out.add_argument("--out", type=Path, default=Path("figures"), help="folder for the PNGs (default: %(default)s)")
    out.add_argument("--max-maps", type=int, default=16, help="feature maps drawn per stage (default: %(default)s)")
    out.add_argument("--results", action="store_true",
                     help="with --weights: a confusion matrix and misclassified images of the test split")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    """Draw what ``args`` asks for and print each file written.

    Bad input raises ValueError / FileNotFoundError, which ``dcnn.cli`` reports in one line.
    """
    try:
        written = draw(args)
    except ImportError as exc:   # matplotlib (or Pillow) missing: say how to install, no traceback
        raise SystemExit(f"dcnn: error: {exc}") from None
    for path in written:
        print(path)
    return 0


def draw(args) -> list[Path]:
    import backends

    from ..viz import plot_filters, plot_results, plot_stages, plot_training_curves
    from ..viz.segmentation import plot_segmentation
    from .segment_commands import check_data_task, is_segmentation
    positional = getattr(args, "weights_arg", None)
    if positional is not None:
        if args.weights is not None and args.weights != positional:
            raise ValueError(f"two models given: {positional} and --weights {args.weights}; give one")
        args.weights = positional
    if args.max_maps < 1:
        raise ValueError(f"--max-maps must be at least 1; got {args.max_maps}")
    if args.weights is None and args.results:
        raise ValueError("--results needs a trained model: give its run folder or .safetensors file")
    if args.weights is None and (args.model or "seed") != "seed":
        raise ValueError(f"--model {args.model} needs a trained model (an untrained model shows only random "
                         "filters); without weights only the seed's edge-filter demo (--model seed) is drawn")
    backend = backends.use(args.backend) if args.backend else backends.get_backend()
    if args.weights is not None:
        from ..io.loading import model_name as name_of
        net, meta, history = load_trained(args.weights, args.model, backend)
        dataset_name = args.dataset or meta.get("dataset") or "fashion-mnist"
        model_name = f"{args.model or name_of(meta, args.weights)} ({args.weights})"
    else:
        from ..viz.seed import edge_filter_demo
        net, history, meta = edge_filter_demo(max_activation=args.max_activation, backend=backend), None, {}
        dataset_name, model_name = args.dataset or "fashion-mnist", "seed edge-filter demo"
    segmentation = args.weights is not None and is_segmentation(net, meta)
    dataset = None
    if args.image is None or args.results or segmentation:
        from ..data.datasets import load
        dataset = load(dataset_name, args.data_dir)
        if segmentation:
            check_data_task(dataset, True, args.weights)
    image, caption = pick_image(args, net, dataset)
    out = args.out
    written = plot_stages(net, image, out, max_maps=args.max_maps, caption=f"{caption} · {model_name}")
    written.append(plot_filters(net, out / "filters.png"))
    if history:
        written.append(plot_training_curves(history, out / "training_curves.png"))
    if segmentation:       # its results: test images beside their true and predicted masks (--results or not)
        written.append(plot_segmentation(net, dataset.x_test, dataset.y_test, out / "segmentation.png",
                                         dataset.classes))
    elif args.results:
        written += plot_results(net, dataset.x_test, dataset.y_test, out, dataset.classes)
    return written


def pick_image(args, net, dataset):
    """The (C, H, W) image and a caption saying where it comes from."""
    from ..viz.images import load_image_file
    if args.image is not None:
        shape = net.input_shape
        if shape is None:
            return load_image_file(args.image), str(args.image)
        from ..data.images import model_image
        try:       # exactly what ``dcnn predict`` classifies: aspect kept, inverted the same way
            return model_image(args.image, shape, getattr(args, "invert", "auto")), str(args.image)
        except ImportError as exc:
            raise ImportError(f"{exc} (or pip install -e '.[images]' in a clone)") from None
    images = dataset.x_test if args.split == "test" else dataset.x_train
    labels = dataset.y_test if args.split == "test" else dataset.y_train
    if not 0 <= args.index < len(images):
        raise ValueError(f"--index {args.index} is out of range: the {dataset.name} {args.split} split has "
                         f"{len(images)} images (0..{len(images) - 1})")
    label = labels[args.index]
    # one class per image, or a mask: the classes that it shows
    what = dataset.classes[label] if np.ndim(label) == 0 else \
        ", ".join(dataset.classes[k] for k in np.unique(label) if k) or "background only"
    return images[args.index], f"{dataset.name} {args.split} image {args.index}: {what}"


def load_trained(weights: Path, model: str | None, backend):
    """(net, weights metadata, history dict or None) for a run folder or weights file."""
    from ..io.loading import load_trained as load_net
    from ..io.loading import run_history
    net, meta, path = load_net(Path(weights), model, backend)
    return net, meta, run_history(path)
