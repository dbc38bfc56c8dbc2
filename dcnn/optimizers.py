"""SGD (momentum, Nesterov, weight decay) and Adam, with torch.optim's update rules.

Updates are in place on the device; the state is named per parameter key so it
can be checkpointed next to the weights.
"""
from backends import backend_of

from .validation import check_number


class Optimizer:
    name = "?"

    def __init__(self, lr: float):
        self.lr = check_number(type(self).__name__, "learning rate", lr, low=0, low_open=True)
        self.state: dict[str, dict] = {}    # parameter key -> {slot name: device array}
        self.steps = 0

    def step(self, entries) -> None:
        """``entries``: (key, parameter, gradient) triples; parameters are updated in place."""
        self.steps += 1
        for key, param, grad in entries:
            self._update(key, param, grad, self.state.setdefault(key, {}))

    def _update(self, key, param, grad, slots):
        raise NotImplementedError

    def state_arrays(self) -> dict:
        """Flat {"<param key>.<slot>": array} for checkpoints."""
        return {f"{key}.{slot}": value for key, slots in self.state.items() for slot, value in slots.items()}

    def load_state_arrays(self, arrays: dict, steps: int) -> None:
        self.state = {}
        for flat, value in arrays.items():
            key, slot = flat.rsplit(".", 1)
            self.state.setdefault(key, {})[slot] = value
        self.steps = steps

    def config(self) -> dict:
        return {"name": self.name, "lr": self.lr}


class SGD(Optimizer):
    name = "sgd"

    def __init__(self, lr: float = 0.01, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0):
        super().__init__(lr)
        momentum = check_number("SGD", "momentum", momentum, low=0, high=1)
        weight_decay = check_number("SGD", "weight_decay", weight_decay, low=0)
        if not isinstance(nesterov, bool):
            raise TypeError(f"SGD nesterov must be True or False; got {nesterov!r}")
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        self.momentum, self.nesterov, self.weight_decay = momentum, nesterov, weight_decay

    def _update(self, key, param, grad, slots):
        if self.weight_decay:
            grad = grad + self.weight_decay * param
        if self.momentum:
            buf = slots.get("momentum_buffer")
            if buf is None:
                buf = slots["momentum_buffer"] = backend_of(grad).xp.asarray(grad, copy=True)
            else:
                buf *= self.momentum
                buf += grad
            grad = grad + self.momentum * buf if self.nesterov else buf
        param -= self.lr * grad

    def config(self):
        return {**super().config(), "momentum": self.momentum, "nesterov": self.nesterov,
                "weight_decay": self.weight_decay}


class Adam(Optimizer):
    name = "adam"

    def __init__(self, lr: float = 0.001, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(lr)
        if isinstance(betas, (str, bytes)) or not hasattr(betas, "__len__") or len(betas) != 2:
            raise TypeError(f"Adam betas must be a pair (beta1, beta2), e.g. (0.9, 0.999); got {betas!r}")
        # beta = 1 would divide by 1 - beta**t = 0 in the bias correction.
        self.betas = (check_number("Adam", "beta1", betas[0], low=0, high=1),
                      check_number("Adam", "beta2", betas[1], low=0, high=1))
        self.eps = check_number("Adam", "eps", eps, low=0, low_open=True)
        self.weight_decay = check_number("Adam", "weight_decay", weight_decay, low=0)

    def _update(self, key, param, grad, slots):
        xp = backend_of(grad).xp
        b1, b2 = self.betas
        if self.weight_decay:
            grad = grad + self.weight_decay * param
        if "exp_avg" not in slots:
            slots["exp_avg"] = xp.zeros_like(param)
            slots["exp_avg_sq"] = xp.zeros_like(param)
        m, v = slots["exp_avg"], slots["exp_avg_sq"]
        m *= b1
        m += (1 - b1) * grad
        v *= b2
        v += (1 - b2) * (grad * grad)
        t = self.steps
        denom = xp.sqrt(v) / ((1 - b2 ** t) ** 0.5) + self.eps
        param -= (self.lr / (1 - b1 ** t)) * (m / denom)

    def config(self):
        return {**super().config(), "betas": list(self.betas), "eps": self.eps, "weight_decay": self.weight_decay}


OPTIMIZERS = {"sgd": SGD, "adam": Adam}


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
