"""What ``DCNNetwork.summary()`` prints and ``parameter_counts()`` returns."""
from __future__ import annotations

import numpy as np


def parameter_counts(net) -> tuple[int, int]:
    """(trainable, non-trainable): frozen weights and float buffers (BatchNorm's running statistics)
    count as non-trainable, as in Keras."""
    trainable = frozen = 0
    for _, layer in net.model.named_layers():
        count = layer.param_count()
        if layer.trainable:
            trainable += count
        else:
            frozen += count
        frozen += sum(int(np.prod(b.shape)) for b in layer.buffers.values()
                      if "float" in str(getattr(b, "dtype", "")))
    return trainable, frozen


def summary(net, print_fn=print):
    """Each layer's output shape and parameter count, and the trainable and non-trainable totals.

    Prints the table with ``print_fn`` and returns None, as Keras does (so a notebook shows it
    once); ``print_fn=None`` returns the text instead of printing it.
    """
    rows = [("#", "layer", "output shape", "params")]
    shape = net.input_shape
    rows.append(("", "input", str(("N",) + shape).replace("'", ""), ""))
    for i, layer in enumerate(net.layers):
        shape = layer.output_shape(shape)
        for key, sub in layer.named_modules(str(i)):
            depth = key.count(".")
            name = type(sub).__name__ if any(True for _ in sub.children()) else sub.describe()
            rows.append((key, "  " * depth + name, str(("N",) + tuple(shape)).replace("'", "") if sub is layer
                         else "", f"{sub.param_count():,}"))
    widths = [max(len(r[c]) for r in rows) for c in range(4)]
    fmt = lambda r: "  ".join(v.ljust(w) if c < 3 else v.rjust(w) for c, (v, w) in enumerate(zip(r, widths)))
    rule = "-" * len(fmt(rows[0]))
    trainable, frozen = parameter_counts(net)
    text = "\n".join([fmt(r) for r in rows[:1]] + [rule] + [fmt(r) for r in rows[1:]] + [rule,
                     f"total parameters: {trainable + frozen:,}  (trainable: {trainable:,}, "
                     f"non-trainable: {frozen:,})",
                     f"backend: {net.backend.describe()}"])
    if print_fn is None:
        return text
    print_fn(text)
    return None
