"""SGD (momentum, Nesterov, weight decay), Adam and AdamW, with torch.optim's update rules.

An optimiser updates a model's ``FlatParameters`` in place with one backend call
per step (``sgd_update`` / ``adam_update``, generic versions in backends/ops/optim.py).
Its state ("slots": momentum, moment estimates) is one flat buffer per slot laid
out as the parameters; checkpoints see it per parameter key, as
``"<param key>.<slot>"``, the names torch.optim uses.
"""
from __future__ import annotations

from backends import backend_of

from ..utils.checks import check_number


class Optimizer:
    name = "?"
    slot_names: tuple = ()

    def __init__(self, lr: float):
        self.lr = check_number(type(self).__name__, "learning rate", lr, low=0, low_open=True)
        self.steps = 0
        self._slots: dict = {}          # slot name -> flat device array
        self._params = None             # the FlatParameters the slots are laid out as
        self._loaded: dict = {}         # per-key state waiting for the next step's layout

    def step(self, params, grad) -> None:
        """One update of ``params`` (FlatParameters) by the flat gradient ``grad``."""
        self.steps += 1
        self._lay_out_slots(params)
        self._update(params.backend, params.data, grad)

    def _update(self, backend, param, grad):
        raise NotImplementedError

    def _lay_out_slots(self, params) -> None:
        if self._params is params:
            return
        previous = self.state_arrays()     # per key, from the old layout (or a checkpoint)
        xp = params.backend.xp
        self._slots = {}
        for slot in self.slot_names:
            flat = xp.zeros((len(params),), dtype=params.data.dtype, device=params.backend.device)
            for key, view in zip(params.keys, params.split(flat)):
                value = previous.get(f"{key}.{slot}")
                if value is None:
                    continue
                if tuple(value.shape) != tuple(view.shape):
                    raise ValueError(f"optimizer state {key}.{slot} has shape {tuple(value.shape)}; "
                                     f"the parameter has shape {tuple(view.shape)}")
                view[...] = value      # on this backend already (to() and checkpoints put it there)
            self._slots[slot] = flat
        self._params, self._loaded = params, {}

    def state_arrays(self) -> dict:
        """{"<param key>.<slot>": array} for checkpoints (views of the flat slots)."""
        if self._params is None:
            return dict(self._loaded)
        return {f"{key}.{slot}": view for slot, flat in self._slots.items()
                for key, view in zip(self._params.keys, self._params.split(flat))}

    def load_state_arrays(self, arrays: dict, steps: int) -> None:
        """State from a checkpoint; it is laid out at the next step."""
        self._loaded, self._params, self._slots = dict(arrays), None, {}
        self.steps = steps

    def to(self, backend) -> None:
        """Move the state to another backend (laid out again at the next step)."""
        self._loaded = {k: backend.from_numpy(backend_of(v).to_numpy(v)) for k, v in self.state_arrays().items()}
        self._params, self._slots = None, {}

    def config(self) -> dict:
        return {"name": self.name, "lr": self.lr}


class SGD(Optimizer):
    name = "sgd"

    def __init__(self, lr: float = 0.01, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0):
        super().__init__(lr)
        self.momentum = check_number("SGD", "momentum", momentum, low=0, high=1)
        self.weight_decay = check_number("SGD", "weight_decay", weight_decay, low=0)
        if not isinstance(nesterov, bool):
            raise TypeError(f"SGD nesterov must be True or False; got {nesterov!r}")
        if nesterov and self.momentum <= 0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        self.nesterov = nesterov
        self.slot_names = ("momentum_buffer",) if self.momentum else ()

    def _update(self, backend, param, grad):
        backend.sgd_update(param, grad, self._slots.get("momentum_buffer"), lr=self.lr, momentum=self.momentum,
                           nesterov=self.nesterov, weight_decay=self.weight_decay)

    def config(self):
        return {**super().config(), "momentum": self.momentum, "nesterov": self.nesterov,
                "weight_decay": self.weight_decay}


class Adam(Optimizer):
    """torch.optim.Adam: ``weight_decay`` is added to the gradient (L2)."""

    name = "adam"
    slot_names = ("exp_avg", "exp_avg_sq")
    decoupled = False

    def __init__(self, lr: float = 0.001, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(lr)
        owner = type(self).__name__
        if isinstance(betas, (str, bytes)) or not hasattr(betas, "__len__") or len(betas) != 2:
            raise TypeError(f"{owner} betas must be a pair (beta1, beta2), e.g. (0.9, 0.999); got {betas!r}")
        # beta = 1 would divide by 1 - beta**t = 0 in the bias correction.
        self.betas = (check_number(owner, "beta1", betas[0], low=0, high=1),
                      check_number(owner, "beta2", betas[1], low=0, high=1))
        self.eps = check_number(owner, "eps", eps, low=0, low_open=True)
        self.weight_decay = check_number(owner, "weight_decay", weight_decay, low=0)

    def _update(self, backend, param, grad):
        backend.adam_update(param, grad, self._slots["exp_avg"], self._slots["exp_avg_sq"], lr=self.lr,
                            beta1=self.betas[0], beta2=self.betas[1], eps=self.eps,
                            weight_decay=self.weight_decay, decoupled=self.decoupled, step=self.steps)

    def config(self):
        return {**super().config(), "betas": list(self.betas), "eps": self.eps, "weight_decay": self.weight_decay}


class AdamW(Adam):
    """torch.optim.AdamW: decoupled weight decay, param *= 1 - lr * weight_decay (default 0.01)."""

    name = "adamw"
    decoupled = True

    def __init__(self, lr: float = 0.001, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.01):
        super().__init__(lr, betas, eps, weight_decay)


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW}


def get_optimizer(optimizer, **kwargs):
    if isinstance(optimizer, str):
        try:
            cls = OPTIMIZERS[optimizer.lower()]
        except KeyError:
            raise ValueError(f"unknown optimizer {optimizer!r}; valid ones are: {', '.join(OPTIMIZERS)}") from None
        return cls(**kwargs)
    if isinstance(optimizer, Optimizer):
        return optimizer
    raise TypeError(f"optimizer must be a name or an Optimizer; got {type(optimizer).__name__}")
