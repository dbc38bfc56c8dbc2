"""The metrics compiled into a ``DCNNetwork``, kept on the device through fit and evaluate.

``compile(metrics=[...])`` takes names (``dcnn.model.metrics.get_metric``) or Metric objects; the
default is ``['accuracy']`` for cross-entropy and none for the other losses.  Each run (a training
epoch, one evaluation) works on a ``MetricSet`` of clones, so the user's objects and the training
and validation sums stay apart.  Updates only queue device work; the sums are read once at the end
(``read``), after one all-reduce of every rank's sums in data-parallel training.

A plain ``Accuracy`` on (N, K) class outputs is the *fast* path: its sums are fit's running hit
count (which the fused loss counts anyway, and data-parallel steps already sum over the ranks) and
its row count, so it costs nothing per step and resumes with fit's saved sums.
"""
from __future__ import annotations

import inspect
import math

import numpy as np

from .losses import VALUE_LOSSES
from .metrics import Accuracy, ConfusionMatrix, get_metric


def compile_metrics(metrics, loss) -> list:
    """The metric objects for ``compile(metrics=...)``: None is the loss's default (accuracy for
    class losses; none for mse, mae and bce_with_logits).  Class metrics given by name skip the
    loss's ``ignore_index`` too (unlabelled pixels count for nothing); objects are taken as given."""
    if metrics is None:
        metrics = [] if isinstance(loss, VALUE_LOSSES) else ["accuracy"]
    elif isinstance(metrics, str) or hasattr(metrics, "update"):
        metrics = [metrics]
    elif isinstance(metrics, dict):
        raise TypeError("metrics must be a list of names or Metric objects (one output: no dict per output)")
    ignore = getattr(loss, "ignore_index", None)
    out = []
    for m in metrics:
        metric = get_metric(m)
        if isinstance(m, str) and ignore is not None and hasattr(metric, "ignore_index"):
            metric = get_metric(m, ignore_index=ignore)
        out.append(metric)
    names = [m.name for m in out]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"metrics {twice} are given twice; their logs would overwrite each other")
    return out


def hits(net, logits, y):
    """(the right arg-maxes over axis 1 as a 0-d device count, the arg-maxes or None): the predicted
    classes of images or pixels, made once a batch for the hit count and the class metrics alike;
    a count of 0 and no arg-max for dense values (mse, mae, bce), which have no classes."""
    xp = net.backend.xp
    if logits.ndim > 2 and isinstance(net.loss, VALUE_LOSSES):
        return xp.zeros((), dtype=xp.int64, device=net.backend.device), None
    predicted = net.backend.class_argmax(logits)
    labels = y if y.ndim == logits.ndim - 1 else xp.argmax(y, axis=1)
    return xp.sum(xp.astype(predicted == labels, xp.int64)), predicted


class MetricSet:
    """Running metrics of one pass over outputs of per-sample shape ``output_shape`` (K, ...)."""

    def __init__(self, metrics, output_shape, backend):
        output_shape = tuple(output_shape)
        k = output_shape[0] if output_shape else 1
        self.metrics = [m.clone() if hasattr(m, "clone") else m for m in metrics]
        self.fast = None
        for m in self.metrics:
            if isinstance(m, ConfusionMatrix) and m.num_classes is None:
                m.num_classes = k if k > 1 else 2       # one logit is binary; known now, so every rank has sums
            if self.fast is None and type(m) is Accuracy and m.ignore_index is None and len(output_shape) == 1 \
                    and k > 1:
                self.fast = m
        self.device = [m for m in self.metrics if m is not self.fast]
        # The metrics that take the batch's arg-max from the caller (the class metrics), not their own.
        self._takes_predicted = [m for m in self.device if "predicted" in inspect.signature(m.update).parameters]
        self.reset(backend)

    def reset(self, backend) -> "MetricSet":
        for m in self.device:
            m.reset(backend)
        return self

    def update(self, outputs, targets, predicted=None) -> None:
        """Queue the device metrics' updates for one batch (never waits for the device); ``predicted``:
        the outputs' arg-max over axis 1 (``hits``'), shared by the class metrics."""
        for m in self.device:
            if predicted is not None and m in self._takes_predicted:
                m.update(outputs, targets, predicted=predicted)
            else:
                m.update(outputs, targets)

    def states(self) -> list:
        for m in self.device:
            if not hasattr(m, "state"):
                raise TypeError(f"metric {m.name!r} has no state() to sum over data-parallel ranks; "
                                "subclass dcnn.model.metrics.Metric and list its sums in _state_names")
        return [s for m in self.device for s in m.state()]

    def load_states(self, arrays) -> None:
        arrays = list(arrays)
        for m in self.device:
            count = len(m.state())
            m.load_state(arrays[:count])
            arrays = arrays[count:]

    def logs(self, correct, seen, host_states=None) -> dict:
        """Each metric's logs (host floats); ``correct`` and ``seen`` are the fast accuracy's sums.
        ``host_states``: the device metrics' states already read (``read``); their results come from
        twins holding those, so the metrics themselves stay on the device."""
        twins = {}
        if host_states is not None:
            host_states = list(host_states)
            for m in self.device:
                twin, count = m.clone(), len(getattr(m, "_state_names", None) or m.state())
                twin.backend = m.backend
                twin.load_state(host_states[:count])
                twins[id(m)], host_states = twin, host_states[count:]
        out = {}
        for m in self.metrics:
            if m is self.fast:
                out[m.name] = correct / seen if seen else math.nan
                continue
            m = twins.get(id(m), m)
            out.update(m.logs() if hasattr(m, "logs") else {m.name: float(m.result())})
        return out


def _flat(xp, parts):
    # float64 keeps the int64 counts exact (below 2^53) in one buffer with the float sums
    return xp.concat([xp.reshape(xp.astype(p, xp.float64), (-1,)) for p in parts], axis=0)


def _split(flat, parts, restore) -> list:
    pieces, offset = [], 0
    for p in parts:
        size = math.prod(int(d) for d in p.shape)
        pieces.append(restore(flat[offset:offset + size], p))
        offset += size
    return pieces


def read(net, metric_set: MetricSet, values, local_values: bool) -> tuple[list, list | None]:
    """Host floats of ``values`` (device 0-d arrays or host numbers) and host copies of the device
    metrics' states (None if one has no ``state``), with one transfer.  Data-parallel: first one
    all-reduce sums the metrics' states over the ranks, and ``values`` too where they are this
    rank's own (``local_values``; fit's running loss and hits are already global)."""
    backend = net.backend
    xp = backend.xp
    values = [xp.astype(v, xp.float64) if hasattr(v, "shape")
              else xp.asarray(float(v), dtype=xp.float64, device=backend.device) for v in values]
    parallel = net.data_parallel
    if parallel is not None:
        parts = (values if local_values else []) + metric_set.states()
        if parts:
            flat = _flat(xp, parts)
            parallel.comm.allreduce_sum(flat)
            pieces = _split(flat, parts, lambda f, p: xp.astype(xp.round(xp.reshape(f, p.shape)), p.dtype)
                            if p.dtype != xp.float64 else xp.reshape(f, p.shape))
            if local_values:
                values, pieces = pieces[:len(values)], pieces[len(values):]
            metric_set.load_states(pieces)
    states = metric_set.states() if all(hasattr(m, "state") for m in metric_set.device) else None
    parts = values + (states or [])
    pieces = _split(backend.to_numpy(_flat(xp, parts)), parts,
                    lambda f, p: f.reshape(tuple(int(d) for d in p.shape)) if p.dtype == xp.float64
                    else np.round(f).astype(np.int64).reshape(tuple(int(d) for d in p.shape)))
    return [float(v) for v in pieces[:len(values)]], (None if states is None else pieces[len(values):])


def evaluation_logs(net, metric_set: MetricSet, loss_sum, correct, seen) -> dict:
    """{'loss': mean loss, **metric logs} from one evaluation's device sums (this rank's)."""
    (loss_sum, correct, seen), states = read(net, metric_set, [loss_sum, correct, seen], local_values=True)
    return {"loss": loss_sum / seen if seen else math.nan, **metric_set.logs(correct, seen, states)}
