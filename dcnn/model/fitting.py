"""The fit loop behind ``DCNNetwork.fit``: shuffling, batches, callbacks, validation.

Metrics are summed on the device and read once per epoch (each read waits for a GPU).

``fit`` and ``evaluate`` also take a *loader* in place of arrays (``y`` left out), as Keras takes a
``tf.data.Dataset``: any object with ``len()`` (batches per epoch) whose iteration gives the epoch's
(images, labels) batches as host arrays (``dcnn.data.loader.Loader``; also a PyTorch ``DataLoader``).
uint8 images are moved as they are and cast to float32 / 255 on the device (4x fewer bytes to move);
float images are checked and moved as arrays are.  A loader may also have ``set_epoch(epoch)`` (called
at the start of each epoch: a loader restored mid-epoch keeps its place), ``step`` (its position in
the epoch, for one resumed mid-epoch), ``last_step`` (the number of the batch it gave last, when
it leaves some out) and ``last_wait`` (seconds the last batch was waited for; callbacks get it as
``data_wait``).  This module never imports ``dcnn.data``: the protocol is all it knows of loaders.
"""
from __future__ import annotations

import numpy as np

from ..utils.checks import as_targets
from .callbacks import CallbackList, History, ProgbarLogger
from .losses import VALUE_LOSSES, BCEWithLogits, CrossEntropy, TargetError, get_loss
from .metric_state import hits, read


def check_batch_size(batch_size) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")


def spans(n: int, batch_size: int):
    """(start, stop) of each batch; stops never pass n (the array API forbids it)."""
    return [(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]


def is_loader(x) -> bool:
    """Whether ``x`` is a loader of batches rather than an array of samples."""
    return (hasattr(x, "__iter__") and hasattr(x, "__len__") and not hasattr(x, "shape")
            and not hasattr(x, "__array__") and not isinstance(x, (list, tuple, str, bytes, dict)))


def targets(net, y, count: int):
    """``y`` checked on the host by the loss against the outputs' shape, then on the device: a clear
    error (a ValueError) before any step, never a NaN or a wrong metric later."""
    loss, shape = net.loss if net.loss is not None else get_loss("cross_entropy"), net.output_shape
    classic = isinstance(loss, CrossEntropy) and len(shape) == 1 and loss.ignore_index is None
    if classic or not hasattr(loss, "check_targets"):      # (N,) labels or (N, K) one-hot, as always
        if classic and loss.weight is not None and loss.weight.shape[0] != shape[0]:
            raise ValueError(f"cross-entropy has {loss.weight.shape[0]} class weights but the model has "
                             f"{shape[0]} outputs")
        try:
            return as_targets(net.backend, y, count, shape[0])
        except TypeError as exc:
            raise TargetError(str(exc)) from None
    return net.backend.from_numpy(loss.check_targets(y, shape, count))


def prediction(net, outputs):
    """What ``predict`` gives for a batch of outputs: softmax over axis 1 for cross-entropy (and a
    loss it does not know), sigmoid for bce_with_logits, the outputs themselves for mse and mae."""
    xp = net.backend.xp
    if isinstance(net.loss, BCEWithLogits):
        return net.backend.activation(outputs, "sigmoid")[0]
    if isinstance(net.loss, VALUE_LOSSES):
        return outputs
    z = xp.exp(outputs - xp.max(outputs, axis=1, keepdims=True))
    return z / xp.sum(z, axis=1, keepdims=True)


def evaluate_local(net, xd, yd, batch_size, metrics):
    """Device sums (loss sum, hits) and the sample count over (xd, yd), in eval mode, with
    ``metrics`` updated; nothing is read back."""
    xp = net.backend.xp
    loss_sum = xp.zeros((), dtype=xp.float32, device=net.backend.device)
    correct = xp.zeros((), dtype=xp.int64, device=net.backend.device)
    n = xd.shape[0]
    for start, stop in spans(n, batch_size):
        batch_loss, batch_hits = _evaluate_batch(net, xd[start:stop, ...], yd[start:stop, ...], metrics)
        loss_sum += batch_loss
        correct += batch_hits
    return loss_sum, correct, n


def _evaluate_batch(net, xb, yb, metrics):
    """(the batch's loss sum, its hit count), device values, in eval mode; ``metrics`` updated with
    the same arg-max as the hit count."""
    logits = net.logits(xb, training=False)
    loss = net.loss.forward(logits, yb) * xb.shape[0]
    batch_hits, predicted = hits(net, logits, yb)
    metrics.update(logits, yb, predicted)
    return loss, batch_hits


def device_images(net, xb):
    """A host batch of images on the device as float32: uint8 cast and scaled there (x / 255),
    floats checked on the host first (as arrays given to fit are)."""
    xb = np.asarray(xb)
    if xb.dtype != np.uint8:
        return net._prepare(xb)
    if not net.model.built and net.input_shape is None:
        net.input_shape = tuple(int(d) for d in xb.shape[1:])
    net._require_built()
    if tuple(xb.shape[1:]) != tuple(net.input_shape):
        raise ValueError(f"the loader's batch has shape {tuple(xb.shape)}; the model takes "
                         f"(N, {', '.join(map(str, net.input_shape))})")
    xp = net.backend.xp
    return xp.astype(net.backend.from_numpy(xb), xp.float32) / 255


def _batch(net, batch, keep_empty: bool = False):
    """(images, labels) on the device, or None for an empty batch (its images were all unreadable;
    ``keep_empty``: a data-parallel rank whose part of the global batch is empty still takes the step)."""
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
        raise TypeError(f"a loader must give (images, labels) pairs; got {type(batch).__name__}")
    if len(batch[0]) == 0 and not (keep_empty and net.model.built):
        return None
    xd = device_images(net, batch[0])
    return xd, targets(net, np.asarray(batch[1]), xd.shape[0])


def evaluate_loader(net, loader) -> dict:
    """Mean loss and the compiled metrics over one pass of ``loader``, in eval mode."""
    if not is_loader(loader):
        raise TypeError(f"evaluate takes images and labels (x, y), or a loader of (images, labels) batches as x; "
                        f"got {type(loader).__name__} and no labels")
    parallel = net.data_parallel       # each rank its part (a loader built with rank/ranks); sums all-reduced
    if parallel is not None:
        parallel.sync_buffers()
    if net.loss is None:
        net.loss = get_loss("cross_entropy")
    xp = net.backend.xp
    loss_sum = xp.zeros((), dtype=xp.float32, device=net.backend.device)
    correct = xp.zeros((), dtype=xp.int64, device=net.backend.device)
    n, metrics = 0, None
    for batch in map(lambda b: _batch(net, b), loader):
        if batch is None:
            continue
        xb, yb = batch
        metrics = metrics or net.metric_set()     # after the first batch: the model is built
        batch_loss, batch_hits = _evaluate_batch(net, xb, yb, metrics)
        loss_sum += batch_loss
        correct += batch_hits
        n += xb.shape[0]
    net.model.release()
    if metrics is None and net.model.built:     # a rank with no batches still joins the all-reduce
        metrics = net.metric_set()
    net.last_evaluation = metrics  # as _evaluate_device keeps its pass's: never an earlier pass's sums
    states = None
    if metrics is not None:        # one read at the end (data-parallel: one all-reduce first)
        (loss_sum, correct, n), states = read(net, metrics, [loss_sum, correct, n], local_values=True)
    if not n:
        raise ValueError(f"{loader!r} gave no images to evaluate")
    return {"loss": loss_sum / n, **metrics.logs(correct, n, states)}


def _validation(net, validation_data):
    if validation_data is None:
        return None
    if is_loader(validation_data):
        return validation_data
    if len(validation_data) != 2:
        raise ValueError("validation_data must be a pair (x_val, y_val) or a loader")
    return net._prepare(*validation_data)


def _evaluate(net, val) -> dict:
    if is_loader(val):
        return evaluate_loader(net, val)
    return net._evaluate_device(*val, batch_size=256)


def _reset_metrics(net) -> None:
    """Zero the training metrics (a loader's model may be built only by its first batch: then they
    start there, in ``train_on_batch``)."""
    net._train_metrics = net.metric_set() if net.model.built else None


def _epoch_logs(net, loss_sum, correct, seen: int) -> dict:
    """The epoch's mean loss and metrics: one device read per epoch (data-parallel: the loss and
    hits are already the global batches'; the metrics' own sums are all-reduced here)."""
    metrics = net._train_metrics or net.reset_metrics()
    (loss_sum, correct), states = read(net, metrics, [loss_sum, correct], local_values=False)
    return {"loss": loss_sum / seen, **metrics.logs(correct, seen, states)}


def _check_common(epochs, initial_epoch, verbose):
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
        raise ValueError(f"epochs must be a non-negative int; got {epochs!r}")
    if isinstance(initial_epoch, bool) or not isinstance(initial_epoch, (int, np.integer)) or initial_epoch < 0:
        raise ValueError(f"initial_epoch must be an int >= 0 (the number of epochs already done); "
                         f"got {initial_epoch!r}")
    if verbose not in (0, 1, 2, True, False):
        raise ValueError(f"verbose must be 0 (silent), 1 (a progress bar) or 2 (one line per epoch); got {verbose!r}")


def fit_loader(net, loader, epochs: int = 1, validation_data=None, verbose: int = 1, callbacks=(),
               initial_epoch: int = 0, augment=None, initial_sums=None) -> History:
    """``fit`` on a loader: each epoch is one pass of it (the remaining batches, for a loader resumed
    mid-epoch; ``initial_sums`` (loss sum, correct, seen) are that epoch's running sums so far, so its
    metrics come out as if never interrupted).  A loader that raises (a dead worker, Ctrl-C) is closed,
    so no worker outlives the run.

    Data-parallel (MPI): each rank's loader gives its part of every global batch (``Loader(rank=,
    ranks=)``); the ranks all-reduce the batch's row count (a host integer) so each weighs its
    gradients by its share, and every rank takes every step, an empty part included."""
    _check_common(epochs, initial_epoch, verbose)
    net._require_compiled()
    parallel = net.data_parallel
    if not net.model.built and net.input_shape is None and getattr(loader, "input_shape", None) is not None:
        net.input_shape = tuple(loader.input_shape)
    val = _validation(net, validation_data)
    xp = net.backend.xp
    net.stop_training = False
    cbs = CallbackList(list(callbacks) + ([ProgbarLogger(int(verbose))] if verbose else []))
    cbs.on_train_begin(net, epochs=epochs, steps=len(loader))
    try:
        for epoch in range(initial_epoch, epochs):
            if hasattr(loader, "set_epoch"):
                loader.set_epoch(epoch)
            first = getattr(loader, "step", 0) % max(len(loader), 1)     # a loader resumed mid-epoch
            start = (0.0, 0, 0) if initial_sums is None or not first else initial_sums
            initial_sums = None
            loss_sum = xp.asarray(float(start[0]), dtype=xp.float32, device=net.backend.device)
            correct = xp.asarray(int(start[1]), dtype=xp.int64, device=net.backend.device)
            seen, complete = int(start[2]), True
            _reset_metrics(net)
            cbs.on_epoch_begin(epoch)
            for step, batch in enumerate(loader, start=first):
                numbered = getattr(loader, "last_step", None)        # the loader's number, past any left out
                step = step if numbered is None else numbered
                batch = _batch(net, batch, keep_empty=parallel is not None)
                if batch is None:               # nothing readable in this batch
                    continue
                xb, yb = batch
                rows = int(xb.shape[0])
                if parallel is not None:        # the global batch's rows: every rank agrees
                    rows = parallel.count_batch(rows)
                    if rows == 0:
                        continue
                if augment is not None and xb.shape[0]:
                    xb = augment(xb)
                loss, hits = net.train_on_batch(xb, yb)
                loss_sum += loss * rows
                correct += hits
                seen += rows
                cbs.on_batch_end(step, {"loss": loss, "loss_sum": loss_sum, "correct": correct, "seen": seen,
                                        "data_wait": getattr(loader, "last_wait", None)})
                if net.stop_training:
                    complete = step + 1 >= len(loader)
                    break
            if seen == 0:
                raise ValueError(f"epoch {epoch + 1}: the loader gave no images (are all of them unreadable?)")
            logs = _epoch_logs(net, loss_sum, correct, seen)
            if val is not None and complete:
                logs.update({f"val_{k}": v for k, v in _evaluate(net, val).items()})
            if complete:
                net.history.on_epoch_end(epoch, logs)
            cbs.on_epoch_end(epoch, logs)
            if net.stop_training:
                break
    except BaseException:
        for used in (loader, val):
            if is_loader(used) and hasattr(used, "close"):
                used.close()
        raise
    cbs.on_train_end()
    return net.history


def fit(net, x, y=None, epochs: int = 1, batch_size: int = 32, validation_data=None, shuffle: bool = True,
            verbose: int = 1, callbacks=(), initial_epoch: int = 0, augment=None,
            validation_split: float = 0.0) -> History:
        """Train; returns the History (per-epoch loss, accuracy and validation metrics).

        ``validation_split`` holds out that fraction of the data (its tail, as Keras does)
        when no ``validation_data`` is given.  ``augment`` is an optional callable ``(device_batch) -> device_batch`` applied
        to each training batch (e.g. random crops); ``initial_epoch`` resumes a run.
        ``verbose``: 0 silent, 1 a live progress bar per epoch (tqdm.auto: a widget in notebooks), 2 one line
        per epoch, as in Keras.
        Metrics are summed on the device and read once per epoch.  ``x`` may be a loader (``y`` left out):
        see ``fit_loader``.
        """
        if y is None and is_loader(x):
            if validation_split:
                raise ValueError("validation_split cannot split a loader; pass validation_data (arrays or a loader)")
            return fit_loader(net, x, epochs=epochs, validation_data=validation_data, verbose=verbose,
                              callbacks=callbacks, initial_epoch=initial_epoch, augment=augment)
        if y is None:
            raise TypeError(f"fit takes images and labels (x, y), or a loader of (images, labels) batches as x; "
                            f"got {type(x).__name__} and no labels")
        check_batch_size(batch_size)
        _check_common(epochs, initial_epoch, verbose)
        net._require_compiled()
        xd, yd = net._prepare(x, y)
        val = None
        if not 0 <= validation_split < 1:
            raise ValueError(f"validation_split must be in [0, 1); got {validation_split!r}")
        if validation_split and validation_data is None:
            keep = int(round(xd.shape[0] * (1 - validation_split)))
            if not 0 < keep < xd.shape[0]:
                raise ValueError(f"validation_split={validation_split} leaves no training or no validation samples")
            val = (xd[keep:, ...], yd[keep:, ...])
            xd, yd = xd[:keep, ...], yd[:keep, ...]
        if validation_data is not None:
            val = _validation(net, validation_data)
        xp = net.backend.xp
        n = xd.shape[0]
        steps = -(-n // batch_size)
        net.stop_training = False
        cbs = CallbackList(list(callbacks) + ([ProgbarLogger(int(verbose))] if verbose else []))
        cbs.on_train_begin(net, epochs=epochs, steps=steps)
        for epoch in range(initial_epoch, epochs):
            order = net.shuffle_rng.permutation(n) if shuffle else np.arange(n)
            order = net.backend.from_numpy(order)
            loss_sum = xp.zeros((), dtype=xp.float32, device=net.backend.device)
            correct = xp.zeros((), dtype=xp.int64, device=net.backend.device)
            _reset_metrics(net)
            cbs.on_epoch_begin(epoch)
            for step, (start, stop) in enumerate(spans(n, batch_size)):
                idx = order[start:stop]
                if net.data_parallel is not None:      # this rank's part of the global batch
                    idx = net.data_parallel.shard(idx)
                xb, yb = xp.take(xd, idx, axis=0), xp.take(yd, idx, axis=0)
                if augment is not None:
                    xb = augment(xb)
                loss, hits = net.train_on_batch(xb, yb)
                loss_sum += loss * (stop - start)
                correct += hits
                seen = stop
                cbs.on_batch_end(step, {"loss": loss, "loss_sum": loss_sum, "correct": correct, "seen": seen})
                if net.stop_training:
                    break
            logs = _epoch_logs(net, loss_sum, correct, seen)
            complete = seen == n
            if val is not None and complete:   # a mid-epoch stop (Ctrl-C) skips the test pass
                logs.update({f"val_{k}": v for k, v in _evaluate(net, val).items()})
            if complete:
                net.history.on_epoch_end(epoch, logs)   # first, so callbacks see this epoch in it
            cbs.on_epoch_end(epoch, logs)
            if net.stop_training:
                break
        cbs.on_train_end()
        return net.history

