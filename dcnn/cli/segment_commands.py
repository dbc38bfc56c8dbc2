"""``dcnn evaluate`` and ``dcnn predict`` for a segmentation model (a class per pixel, such as the unet
preset's): mean IoU, pixel accuracy, per-class IoU and the pixel confusion matrix; coloured mask PNGs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .common import EXIT_FAILED, error, read_model_images


def is_segmentation(net, meta: dict) -> bool:
    """A model that labels every pixel: so recorded by ``dcnn train``, or outputs (classes, H, W)."""
    return meta.get("task") == "segmentation" or len(net.output_shape) == 3


def check_data_task(data, segmentation: bool, path) -> None:
    """The dataset labels what the model predicts: every pixel, or one class per image."""
    if (data.task == "segmentation") != segmentation:
        model = "labels every pixel (segmentation)" if segmentation else "gives one class per image (classification)"
        raise ValueError(f"{path} {model}, but {data.name} is a {data.task} dataset; pass --dataset with one of "
                         f"its kind" + (" (fashion-mosaic)" if segmentation else ""))


# --- evaluate -------------------------------------------------------------------------------------

def evaluate_segmentation(args, net, meta: dict, path, data) -> int:
    from ..io.loading import model_name
    from ..train.metrics import dense_confusion_matrix, segmentation_scores
    classes = list(meta["classes"])
    counts = dense_confusion_matrix(net, data.x_test, data.y_test, batch_size=args.batch_size)
    scores = segmentation_scores(counts, classes)
    if args.json:
        print(json.dumps({"weights": str(path), "dataset": data.name, "model": meta.get("preset"),
                          "name": model_name(meta, path), "task": "segmentation", "images": len(data.y_test),
                          "pixels": scores["pixels"], "miou": scores["miou"],
                          "pixel_accuracy": scores["pixel_accuracy"], "per_class_iou": scores["per_class_iou"],
                          "confusion_matrix": scores["confusion_matrix"], "classes": classes}))
        return 0
    print(f"{path}: {model_name(meta, path)} on the {data.name} test set ({len(data.y_test):,} images, "
          f"{scores['pixels']:,} pixels)")
    print(f"mean IoU: {_number(scores['miou'])}  pixel accuracy: {_number(scores['pixel_accuracy'])}  "
          f"({np.trace(counts):,}/{scores['pixels']:,} pixels right)")
    print()
    width = max(len(c) for c in classes)
    print("per-class IoU (-: the class is in neither the masks nor the predictions):")
    for name, iou in scores["per_class_iou"].items():
        print(f"  {name:<{width}}  {_number(iou)}")
    print()
    print_confusion(counts, classes, "pixel confusion matrix (rows: true class, columns: predicted)")
    return 0


def _number(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def print_confusion(counts: np.ndarray, classes: list, title: str) -> None:
    """The matrix with numbered columns; counts of a million and more in thousands, to stay narrow."""
    counts = np.asarray(counts)
    thousands = counts.max(initial=0) >= 10 ** 6
    shown = np.rint(counts / 1000).astype(np.int64) if thousands else counts
    print(title + (", in thousands of pixels:" if thousands else ":"))
    width = max(len(c) for c in classes)
    cell = max(5, len(str(shown.max(initial=0))) + 1)
    digits = len(str(len(classes) - 1))
    print(" " * (width + digits + 3) + "".join(f"{i:>{cell}}" for i in range(len(classes))))
    for i, (name, row) in enumerate(zip(classes, shown)):
        print(f"  {i:>{digits}} {name:<{width}}" + "".join(f"{v:>{cell}}" for v in row))


# --- predict --------------------------------------------------------------------------------------

def mask_paths(out, images: list) -> tuple[list, Path | None]:
    """Where each image's mask goes, and the legend: ``--out mask.png`` for one image (legend
    mask-legend.png beside it), ``--out FOLDER`` for several (<name>-mask.png and legend.png in it)."""
    if out is None:
        return [None] * len(images), None
    out = Path(out)
    if len(images) == 1 and out.suffix.lower() == ".png":
        return [out], out.with_name(f"{out.stem}-legend.png")
    if out.suffix.lower() == ".png":
        raise ValueError(f"--out {out} names one PNG file, but {len(images)} images were given; give a folder "
                         "for their masks")
    return [out / f"{Path(image).stem}-mask.png" for image in images], out / "legend.png"


def predict_segmentation(args, net, meta: dict, path, paths: list) -> int:
    """The pictures prepared as the dataset's images are (grey, 56x56) and predicted as one batch: a
    coloured mask per image and each class's share of its pixels; a file that cannot be read is
    reported and the rest go on."""
    from ..viz.masks import write_legend, write_mask
    classes = list(meta["classes"])
    masks, legend = mask_paths(args.out, paths)
    mask_of = dict(zip(paths, masks))
    images, good, failures = read_model_images(paths, net, args)
    labels = net.predict(np.stack(images)).argmax(axis=1) if images else []
    results = []
    for image, mask in zip(good, labels):
        shares = np.bincount(mask.ravel(), minlength=len(classes)) / mask.size
        mask_file = mask_of[image]
        if mask_file is not None:
            write_mask(mask_file, mask, len(classes))
        results.append({"image": str(image), "mask": None if mask_file is None else str(mask_file),
                        "shares": {c: float(s) for c, s in zip(classes, shares)}})
    if legend is not None and results:
        write_legend(legend, classes)
    if args.json:
        print(json.dumps({"weights": str(path), "task": "segmentation", "legend": None if legend is None else
                          str(legend), "predictions": results, "errors": failures}))
    else:
        for r in results:
            parts = sorted(((s, c) for c, s in r["shares"].items() if s > 0), reverse=True)
            print(f"{r['image']}: " + ", ".join(f"{c} {s:.1%}" for s, c in parts)
                  + (f"  -> {r['mask']}" if r["mask"] else ""))
        if legend is not None and results:
            print(f"class colours: {legend}")
        elif results:
            print("(pass --out mask.png to write the coloured mask)")
        if failures:
            error(f"{len(failures)} of {len(paths)} image(s) could not be read")
    return EXIT_FAILED if failures else 0
