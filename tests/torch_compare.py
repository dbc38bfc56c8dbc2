"""Layers against their PyTorch twins (dcnn.io.torch_model.to_torch): outputs, the input
gradient, every parameter gradient, buffers, then three optimiser steps of a small
classifier built on them, in float32 or float64."""
from __future__ import annotations

import numpy as np
import torch

import backends
from dcnn.layers.container import Sequential
from dcnn.layers.core import Dense, Flatten
from dcnn.model.network import DCNNetwork
from dcnn.io.torch_model import load_into_torch, to_torch
from helpers import cast_params

TOL = {np.float32: dict(rtol=2e-4, atol=2e-5), np.float64: dict(rtol=1e-9, atol=1e-10)}
TORCH_DTYPE = {np.float32: torch.float32, np.float64: torch.float64}


def _close(ours, theirs, dtype, what, scale=1.0, tol=None):
    theirs = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else np.asarray(theirs)
    ours = np.asarray(ours)
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} vs torch {theirs.shape}"
    tol = dict(tol or TOL[dtype])
    tol["atol"] *= max(1.0, scale)
    np.testing.assert_allclose(ours, theirs, err_msg=what, **tol)


def twin(model, dtype):
    module = to_torch(model)
    load_into_torch(module, {k: np.asarray(v) for k, v in model.state().items()})
    return module.to(TORCH_DTYPE[dtype])


def compare_layers(layers, input_shape, dtype=np.float32, *, seed=0, batch=3, training=True, x=None, what="",
                   tol=None):
    """Forward and backward of ``Sequential(layers)`` against its torch twin; returns the model."""
    be = backends.resolve("numpy")
    model = Sequential(layers)
    model.build(tuple(input_shape), np.random.default_rng(seed), be)
    cast_params(model, be, dtype)
    model.set_needs_input_grad(True)
    module = twin(model, dtype)
    model.train(training)
    module.train(training)
    rng = np.random.default_rng(seed + 1)
    if x is None:
        x = rng.standard_normal((batch,) + tuple(input_shape))
    x = np.asarray(x, dtype)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    yt = module(xt)
    y = model.forward(x.copy())
    what = what or model.describe()
    scale = float(np.abs(yt.detach().numpy()).max()) if yt.numel() else 1.0
    _close(y, yt, dtype, f"forward: {what}", scale, tol)
    dy = rng.standard_normal(tuple(yt.shape)).astype(dtype)
    dy_copy = dy.copy()
    yt.backward(torch.from_numpy(dy))
    dx = model.backward(dy)
    np.testing.assert_array_equal(dy, dy_copy, err_msg=f"backward wrote into dy: {what}")
    gscale = float(np.abs(xt.grad.numpy()).max()) if xt.grad.numel() else 1.0
    _close(dx, xt.grad, dtype, f"dx: {what}", gscale, tol)
    modules = dict(model.named_modules())
    for key, param in module.named_parameters():
        prefix, name = key.rsplit(".", 1) if "." in key else ("", key)
        ours = modules[prefix].grads[name]
        _close(ours, param.grad, dtype, f"d{key}: {what}", float(param.grad.abs().max()), tol)
    theirs = module.state_dict()
    for key, value in model.state().items():
        _close(value, theirs[key], dtype, f"{key} after forward: {what}", float(theirs[key].abs().max()), tol)
    return model


def compare_training(layers, input_shape, dtype=np.float32, *, seed=0, batch=6, classes=3, steps=3,
                     optimizer="sgd", what="", tol=None):
    """Three optimiser steps of ``layers`` (+ Flatten and Dense when they do not end flat) on
    random data: the losses and then every parameter and buffer against torch's."""
    be = backends.resolve("numpy")
    probe = Sequential(list(layers))
    out = probe.output_shape(tuple(input_shape))
    head = ([] if len(out) == 1 else [Flatten()]) + [Dense(classes)]
    net = DCNNetwork(list(layers) + head, input_shape=tuple(input_shape), seed=seed, backend=be).build()
    cast_params(net.model, be, dtype)
    options = {"adam": dict(lr=1e-2), "sgd": dict(lr=0.05, momentum=0.9)}[optimizer]
    net.compile(optimizer, **options)
    module = twin(net.model, dtype)
    module.train()
    opt = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}[optimizer](module.parameters(), **options)
    rng = np.random.default_rng(seed + 7)
    what = what or net.model.describe()
    for step in range(steps):
        x = rng.standard_normal((batch,) + tuple(input_shape)).astype(dtype)
        y = rng.integers(0, classes, batch)
        loss, _ = net.train_on_batch(x, y)
        opt.zero_grad()
        ref = torch.nn.functional.cross_entropy(module(torch.from_numpy(x.copy())), torch.from_numpy(y))
        ref.backward()
        opt.step()
        _close(loss, ref, dtype, f"loss at step {step + 1}: {what}", tol=tol)
    theirs = module.state_dict()
    for key, value in net.model.state().items():
        _close(value, theirs[key], dtype, f"{key} after {steps} steps: {what}", float(theirs[key].abs().max()), tol)
    return net
