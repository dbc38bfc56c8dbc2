"""DCNNetwork: the seed's add_layer / compile / fit API, made whole."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

import backends

from ..layers import Layer, Sequential, Softmax
from ..layers.container import apply_steps, backprop_steps, run_order
from ..layers.graph import Graph
from ..layers.spec import SpecError, model_spec
from ..utils.checks import as_batch, check_input_shape
from ..utils.files import load_arrays, save_arrays
from . import fitting, metric_state, summary
from .callbacks import History
from .losses import VALUE_LOSSES, get_loss
from .optimizers import get_optimizer
from .parameters import FlatParameters


class DCNNetwork:
    """A CNN on the active backend: a chain of layers, or a graph (the functional API).

    >>> net = DCNNetwork(input_shape=(1, 28, 28))
    >>> net.add_layer(Conv2D(8, 3)); net.add_layer(ReLU()); net.add_layer(Flatten()); net.add_layer(Dense(10))
    >>> net.compile(optimizer="sgd", lr=0.05, momentum=0.9)
    >>> history = net.fit(x, y, epochs=2, batch_size=64)

    >>> x = Input((1, 28, 28)); y = Dense(10)(Flatten()(ReLU()(Conv2D(8, 3)(x))))
    >>> net = DCNNetwork(inputs=x, outputs=y)
    """

    def __init__(self, layers=(), *, inputs=None, outputs=None, input_shape=None, seed: int = 0, backend=None):
        if (inputs is None) != (outputs is None):
            raise ValueError("a graph model needs both inputs= and outputs= (tensors from Input(...) and layer calls)")
        if inputs is not None:
            if layers:
                raise ValueError("give either a list of layers or inputs= and outputs=, not both")
            if isinstance(inputs, (list, tuple)) or isinstance(outputs, (list, tuple)):
                raise ValueError("DCNNetwork trains graphs with one input and one output; use a Graph layer "
                                 "(dcnn.layers.graph.Graph) for more")
            self.model = Graph(inputs, outputs)
            input_shape = inputs.shape if input_shape is None else input_shape
        else:
            self.model = Sequential(layers)
        self.backend = backends.resolve(backend) if isinstance(backend, str) else (backend or backends.get_backend())
        self.seed = int(seed)
        seeds = np.random.SeedSequence(self.seed).spawn(2)
        self._init_rng = np.random.default_rng(seeds[0])
        self.shuffle_rng = np.random.default_rng(seeds[1])
        self.input_shape = None if input_shape is None else check_input_shape(input_shape)
        self.loss = None
        self.optimizer = None
        self.metrics = None           # Metric objects, set by compile (None: the loss's default)
        self._train_metrics = None    # the MetricSet that train_on_batch updates
        self.last_evaluation = None   # the MetricSet of the latest evaluate (or fit's validation pass)
        self.history = History()
        self.data_parallel = None     # set by dcnn.distributed.DataParallel

    # --- building ------------------------------------------------------------
    @property
    def layers(self) -> list[Layer]:
        return self.model.layers

    @property
    def is_graph(self) -> bool:
        return isinstance(self.model, Graph)

    def add_layer(self, layer: Layer) -> "DCNNetwork":
        if self.is_graph:
            raise TypeError("add_layer() builds a chain; a graph model is defined by its inputs and outputs")
        self.model.add(layer)
        return self

    add = add_layer

    def build(self, input_shape=None) -> "DCNNetwork":
        if self.model.built:
            return self
        shape = check_input_shape(input_shape) if input_shape is not None else self.input_shape
        if shape is None:
            raise ValueError("the model has no input shape yet: pass input_shape=(C, H, W) to DCNNetwork "
                             "or call build((C, H, W)) or fit() first")
        if not self.layers:
            raise ValueError("the model has no layers: add some with add_layer()")
        self.input_shape = shape
        self.model.build(shape, self._init_rng, self.backend)
        self.model.set_needs_input_grad(False)
        return self

    def compile(self, optimizer="sgd", loss="cross_entropy", metrics=None, *, label_smoothing: float = 0.0,
                loss_options: dict | None = None, **optimizer_options) -> "DCNNetwork":
        """``optimizer`` is 'sgd', 'adam', 'adamw' or an Optimizer; options such as lr=, momentum= go to it.
        ``loss``: 'cross_entropy' (classes on axis 1: (N, K) or (N, K, H, W)), 'mse', 'mae', 'bce_with_logits'
        or a loss object; ``label_smoothing`` and ``loss_options`` (e.g. ``{"ignore_index": 255}``) go to a
        loss given by name.  ``metrics``: names ('accuracy', 'pixel_accuracy', 'miou', 'iou', 'dice', 'mae',
        'psnr'...) or Metric objects (dcnn.model.metric_state); None: [] for mse/mae/bce, else ['accuracy']."""
        self.optimizer = get_optimizer(optimizer, **optimizer_options) if isinstance(optimizer, str) else \
            get_optimizer(optimizer)
        options = {**(loss_options or {}), **({"label_smoothing": label_smoothing} if label_smoothing else {})}
        if options and not isinstance(loss, str):
            raise ValueError(f"label_smoothing and loss_options are for a loss given by name; got a "
                             f"{type(loss).__name__} object (set its options when making it)")
        self.loss = get_loss(loss, **options)
        self.metrics = metric_state.compile_metrics(metrics, self.loss)
        self._train_metrics = self.last_evaluation = None
        return self

    @property
    def output_shape(self) -> tuple:
        """The per-sample shape of the outputs: (K,) for classes, (K, H, W) per pixel."""
        self._require_built()
        return tuple(int(d) for d in self.model.output_shape(self.input_shape))

    @property
    def num_classes(self) -> int:
        """The outputs' class axis (axis 1 of a batch): K of (K,) or of (K, H, W)."""
        return self.output_shape[0]

    def metric_set(self) -> "metric_state.MetricSet":
        """A fresh set of the compiled metrics (clones, zeroed) for one pass over outputs of this model."""
        return metric_state.MetricSet(self.metrics if self.metrics is not None else
                                      metric_state.compile_metrics(None, self.loss), self.output_shape, self.backend)

    def reset_metrics(self) -> "metric_state.MetricSet":
        """Zero the training metrics that train_on_batch updates (fit does it at each epoch's start)."""
        self._train_metrics = self.metric_set()
        return self._train_metrics

    def _require_built(self):
        if not self.model.built:
            self.build()

    def _require_compiled(self):
        if self.optimizer is None or self.loss is None:
            raise RuntimeError("call compile(optimizer=..., loss=...) before training")

    # --- computing ------------------------------------------------------------
    @property
    def _fuses_softmax(self) -> bool:
        """Whether the loss applies the softmax itself (cross-entropy, the default; not mse, mae, bce)."""
        return not isinstance(self.loss, VALUE_LOSSES)

    def _logit_steps(self) -> list:
        # A trailing Softmax is skipped where the loss fuses softmax with cross-entropy.
        # ReLU -> MaxPool2D pairs run as MaxPool2D -> ReLU (same result, a quarter of the work).
        if self.layers and isinstance(self.layers[-1], Softmax) and self._fuses_softmax:
            return run_order(self.layers[:-1])
        return run_order(self.layers)

    def _apply(self, x, training: bool):
        """(logits, saved) on validated device input; ``saved`` is for ``_backprop``."""
        self.model.train(training)
        if self.is_graph:
            return self._logits_graph().apply(x)
        return apply_steps(self._logit_steps(), x)

    def _backprop(self, dy, saved) -> None:
        if self.is_graph:
            self._logits_graph().backprop(dy, saved)
        else:
            backprop_steps(dy, saved)

    def _logits_graph(self) -> Graph:
        if not self._fuses_softmax:       # a trailing Softmax is a layer like any other
            return self.model
        if self._logits_for is not self.model:
            self._logits_for, self._logits = self.model, self.model.logits_graph(lambda l: isinstance(l, Softmax))
            self._logits.needs_input_grad = False
        return self._logits

    _logits_for = None

    def logits(self, x, training: bool = False):
        """Forward pass on validated device input; returns device logits (nothing is kept for backward)."""
        return self._apply(x, training)[0]

    def train_on_batch(self, x, y):
        """One optimisation step on device arrays; returns (loss, correct) as 0-d device arrays.
        The compiled metrics' sums are updated on the device (``reset_metrics`` zeroes them)."""
        if self.data_parallel is not None:      # this rank's shard; gradients averaged over ranks
            return self.data_parallel.train_on_batch(x, y)
        loss, correct = self._forward_backward(x, y)
        params = self.flat_parameters()
        self.optimizer.step(params, params.gather(self._gradients()))
        return loss, correct

    def _forward_backward(self, x, y):
        """Loss and hit count (0-d device arrays); leaves the gradients in the layers."""
        logits, saved = self._apply(x, training=True)
        loss = self.loss.forward(logits, y)
        correct, predicted = getattr(self.loss, "correct", None), None
        if correct is None:
            correct, predicted = metric_state.hits(self, logits, y)
        (self._train_metrics or self.reset_metrics()).update(logits, y, predicted)   # device work: read once an epoch
        del logits
        self.model.zero_grad()
        self._backprop(self.loss.backward(), saved)
        return loss, correct

    def _gradients(self) -> list:
        """The trainable parameters' gradients, in flat_parameters() order (call that first)."""
        xp = self.backend.xp
        # A parameter that no path to the loss reaches (an unused branch) has a zero gradient.
        return [layer.grads[name] if name in layer.grads else xp.zeros_like(layer.params[name])
                for layer, name in self._grad_refs]

    def _trainable_refs(self):
        """(key, params dict, name) of each trainable parameter, and where its gradient lands,
        from one walk over the layer tree (a layer is frozen when it or a layer above it is)."""
        refs, grads = [], []
        frozen = []
        for key, layer in self.model.named_modules():
            if not layer.trainable:
                frozen.append(key + ".")
            if not layer.trainable or any((key + ".").startswith(f) for f in frozen):
                continue
            for name in layer.params:
                refs.append((f"{key}.{name}" if key else name, layer.params, name))
                grads.append((layer, name))
        return refs, grads

    def flat_parameters(self):
        """The trainable parameters as one FlatParameters (the layers hold views of it)."""
        refs, self._grad_refs = self._trainable_refs()
        if self._flat is None or not self._flat.is_current(refs):
            self._flat = FlatParameters(self.backend, refs)
        return self._flat

    _flat = None
    _grad_refs = ()

    def _prepare(self, x, y=None):
        if not self.model.built and self.input_shape is None and hasattr(x, "shape") and len(x.shape) > 1:
            self.input_shape = tuple(int(d) for d in x.shape[1:])
        self._require_built()
        xd = as_batch(self.backend, x, self.input_shape)
        if y is None:
            return xd
        return xd, fitting.targets(self, y, xd.shape[0])

    def fit(self, x, y=None, epochs: int = 1, batch_size: int = 32, validation_data=None, shuffle: bool = True,
            verbose: int = 1, callbacks=(), initial_epoch: int = 0, augment=None,
            validation_split: float = 0.0) -> History:
        """Train; returns the History (per-epoch loss, accuracy and validation metrics).

        ``validation_split`` holds out that fraction of the data (its tail, as Keras does)
        when no ``validation_data`` is given.  ``augment`` is an optional callable ``(device_batch) -> device_batch``
        applied to each training batch (e.g. random crops); ``initial_epoch`` resumes a run.
        ``verbose``: 0 silent, 1 a live progress bar per epoch (tqdm.auto: a widget in notebooks), 2 one line
        per epoch, as in Keras.  The loop is ``dcnn.model.fitting.fit``.
        """
        return fitting.fit(self, x, y, epochs=epochs, batch_size=batch_size, validation_data=validation_data,
                           shuffle=shuffle, verbose=verbose, callbacks=callbacks, initial_epoch=initial_epoch,
                           augment=augment, validation_split=validation_split)

    stop_training = False

    def _evaluate_device(self, xd, yd, batch_size):
        metrics = self.last_evaluation = self.metric_set()    # kept: its sums are the pass's (e.g. confusion counts)
        if self.data_parallel is not None:      # each rank its part; sums all-reduced
            return self.data_parallel.evaluate(xd, yd, batch_size, metrics)
        return metric_state.evaluation_logs(self, metrics, *fitting.evaluate_local(self, xd, yd, batch_size, metrics))

    def evaluate(self, x, y=None, batch_size: int = 256) -> dict:
        """Mean loss and each compiled metric ({'loss', 'accuracy'} by default for classes), in eval mode;
        ``x`` may be a loader of (images, labels) batches (no ``y``)."""
        if y is None:
            return fitting.evaluate_loader(self, x)
        fitting.check_batch_size(batch_size)
        if self.loss is None:
            self.loss = get_loss("cross_entropy")
        return self._evaluate_device(*self._prepare(x, y), batch_size=batch_size)

    def predict(self, x, batch_size: int = 256) -> np.ndarray:
        """The outputs as a host NumPy array, as the loss reads them: class probabilities (softmax over
        axis 1: (N, K), or (N, K, H, W) per pixel) for cross-entropy, sigmoid probabilities for
        bce_with_logits, the raw outputs for mse and mae."""
        fitting.check_batch_size(batch_size)
        xd = self._prepare(x)
        outs = [fitting.prediction(self, self.logits(xd[start:stop, ...], training=False))
                for start, stop in fitting.spans(xd.shape[0], batch_size)]
        return self.backend.to_numpy(self.backend.xp.concat(outs, axis=0))

    # --- describing -----------------------------------------------------------
    def parameter_counts(self) -> tuple[int, int]:
        """(trainable, non-trainable): frozen weights and float buffers (BatchNorm's running statistics)
        count as non-trainable, as in Keras."""
        self._require_built()
        return summary.parameter_counts(self)

    def summary(self, print_fn=print):
        """Each layer's output shape and parameter count, and the trainable and non-trainable totals.

        Prints the table with ``print_fn`` and returns None, as Keras does (so a notebook shows it
        once); ``print_fn=None`` returns the text instead of printing it.
        """
        self._require_built()
        return summary.summary(self, print_fn)

    def __repr__(self) -> str:
        lines = [f"  ({key}): {layer.describe()}" for key, layer in self.model.children()]
        shape = "not built" if self.input_shape is None else f"input_shape={self.input_shape}"
        tail = ""
        if self.model.built:
            trainable, frozen = self.parameter_counts()
            tail = f", {trainable:,} trainable and {frozen:,} non-trainable parameters"
        return f"DCNNetwork({shape}{tail}, backend={self.backend.name}\n" + "\n".join(lines) + "\n)"

    # --- state ----------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """Host copies, keyed and laid out as the equivalent torch.nn.Sequential's state_dict."""
        self._require_built()
        return {key: self.backend.to_numpy(value) for key, value in self.model.state().items()}

    def load_state_dict(self, arrays: dict, source: str = "state dict") -> None:
        self._require_built()
        expected = self.model.state()
        missing = [k for k in expected if k not in arrays]
        unexpected = sorted(k for k in arrays if k not in expected)
        if missing or unexpected:
            raise ValueError(f"{source} does not fit this model: missing keys {missing}, unexpected keys {unexpected}")
        cast = {}
        for key, current in expected.items():
            value = np.asarray(arrays[key])
            if tuple(value.shape) != tuple(current.shape):
                raise ValueError(f"{source}: {key!r} has shape {tuple(value.shape)}, the model expects "
                                 f"{tuple(current.shape)}")
            if not (np.issubdtype(value.dtype, np.number) or value.dtype == np.bool_):
                raise ValueError(f"{source}: {key!r} has dtype {value.dtype}, not numbers")
            target = np.dtype(str(current.dtype).split(".")[-1])
            with np.errstate(over="ignore", invalid="ignore"):   # checked just below, after the cast
                cast[key] = value.astype(target)
            # After the cast: float64 weights beyond float32's range become inf here.
            if np.issubdtype(target, np.floating) and not np.isfinite(cast[key]).all():
                raise ValueError(f"{source}: {key!r} contains NaN or Inf"
                                 + (f" once cast to {target} (values beyond its range)"
                                    if np.isfinite(value).all() else ""))
        layers = dict(self.model.named_modules())
        for key, value in cast.items():
            prefix, name = key.rsplit(".", 1) if "." in key else ("", key)
            layers[prefix].set_state(name, self.backend.from_numpy(value))

    def save_weights(self, path, metadata: dict | None = None) -> None:
        """A safetensors file with torch.nn.Sequential keys, written atomically; its metadata holds
        the architecture as a JSON layer spec (dcnn.layers.spec) when every layer's arguments can be stored."""
        meta = {"format": "dcnn", "input_shape": list(self.input_shape or ()),
                "layers": [layer.describe() for layer in self.layers]}
        try:
            meta["spec"] = model_spec(self)
        except SpecError as exc:
            warnings.warn(f"{path}: the architecture is not stored ({exc}); load it with a preset name")
        save_arrays(path, self.state_dict(), {**meta, **(metadata or {})})

    def save(self, path, *, classes=None, metadata: dict | None = None) -> Path:
        """Weights, architecture and class names in one .safetensors file, written atomically:
        ``dcnn.load(path)``, ``dcnn evaluate``, ``dcnn predict`` and ``dcnn visualize`` all read it."""
        path = Path(path)
        if path.suffix != ".safetensors":
            raise ValueError(f"a model is saved as a .safetensors file; got {str(path)!r}")
        self.build()
        classes = list(classes if classes is not None else getattr(self, "classes", None) or
                       [str(i) for i in range(self.num_classes)])
        if len(classes) != self.num_classes or not all(isinstance(c, str) for c in classes):
            raise ValueError(f"classes must be {self.num_classes} names (strings), one per output; got {classes!r}")
        self.save_weights(path, metadata={"classes": classes, **(metadata or {})})
        return path

    def load_weights(self, path) -> dict:
        """Load weights saved by dcnn or converted from PyTorch; returns the file's metadata."""
        arrays, metadata = load_arrays(path)
        self.load_state_dict(arrays, source=str(path))
        return metadata

    def to(self, backend) -> "DCNNetwork":
        """Move parameters, buffers and optimiser state to another backend."""
        target = backends.resolve(backend) if isinstance(backend, str) else backend
        if target is self.backend:
            return self
        move = lambda a: target.from_numpy(self.backend.to_numpy(a))
        if self.model.built:
            for _, layer in self.model.named_modules():
                layer.move_to(target, move, int(self._init_rng.integers(2**63)))
        if self.optimizer is not None:
            self.optimizer.to(target)
        self._flat = None
        self._train_metrics = self.last_evaluation = None
        self.backend = target
        return self

