"""The losses' hot operations, generic versions: softmax cross-entropy fused with its gradient (and
the count of correct predictions), cross-entropy over the class axis of dense outputs, and binary
cross-entropy on logits."""
from __future__ import annotations


class LossOps:
    def softmax_cross_entropy(self, logits, targets, label_smoothing: float = 0.0):
        """Mean cross-entropy of softmax(logits) against integer labels (N,) or
        distributions (N, K).  Returns (loss, dlogits, correct) as device arrays:
        the 0-d mean loss, dL/dlogits = (softmax - target) / N, and the 0-d int64
        count of rows whose arg-max is the label (the target's arg-max).
        ``label_smoothing`` e mixes the target with the uniform distribution,
        (1 - e) * target + e / K, as torch.nn.CrossEntropyLoss(label_smoothing=e)."""
        xp = self.xp
        n, k = logits.shape
        shifted = logits - xp.max(logits, axis=1, keepdims=True)
        log_probs = shifted - xp.log(xp.sum(xp.exp(shifted), axis=1, keepdims=True))
        if targets.ndim == 1:
            labels = targets
            classes = xp.reshape(xp.arange(k, device=self.device), (1, k))
            y = xp.astype(xp.reshape(targets, (-1, 1)) == classes, logits.dtype)
        else:
            labels = xp.argmax(targets, axis=1)
            y = targets
        if label_smoothing:
            y = y * (1.0 - label_smoothing) + label_smoothing / k
        # 0 * -inf is NaN: where a target is 0 its term is 0 whatever the log-probability.
        terms = xp.where(y > 0, y * log_probs, 0.0)
        loss = -xp.sum(terms) / n
        grad = (xp.exp(log_probs) - y) / n
        correct = xp.sum(xp.astype(xp.argmax(logits, axis=1) == labels, xp.int64))
        return loss, grad, correct

    def cross_entropy_nd(self, logits, targets, weight=None, ignore_index=None, label_smoothing: float = 0.0):
        """torch.nn.functional.cross_entropy (mean) over the class axis 1 of logits (N, K, d1, ...).

        ``targets`` are integer labels (N, d1, ...) or class probabilities of the logits' shape.
        ``weight`` is None or a (K,) array in the logits' dtype; ``ignore_index`` None or an int
        whose positions count for nothing (labels only); ``label_smoothing`` e mixes each target
        with the uniform distribution.  With labels the mean is over the kept positions, each
        weighted by its label's weight; with probabilities over every position.  Returns
        (loss, dlogits): the 0-d loss and its gradient.  Where nothing counts (every label
        ignored) both are 0, where torch gives NaN.

        With w the weight (1 without one) and t the weighted target of a position, t_c =
        (1 - e) w_y [c = y] + e w_c / K for a label y and t_c = w_c ((1 - e) p_c + e / K) for
        probabilities p, the position's loss is -sum_c t_c log softmax_c, its gradient
        softmax * sum_c t_c - t, and both are divided by the count D (the kept positions'
        label weights, or the number of positions)."""
        xp = self.xp
        k = logits.shape[1]
        shape = (1, k) + (1,) * (logits.ndim - 2)
        shifted = logits - xp.max(logits, axis=1, keepdims=True)
        log_probs = shifted - xp.log(xp.sum(xp.exp(shifted), axis=1, keepdims=True))
        w = None if weight is None else xp.reshape(weight, shape)
        positions = 1
        for d in targets.shape if targets.ndim < logits.ndim else targets.shape[:1] + targets.shape[2:]:
            positions *= d
        if targets.ndim == logits.ndim - 1:
            labels = xp.expand_dims(targets, axis=1)
            y = xp.astype(labels == xp.reshape(xp.arange(k, dtype=targets.dtype, device=self.device), shape),
                          logits.dtype)
            kept = None if ignore_index is None else xp.astype(labels != ignore_index, logits.dtype)
            if kept is not None:
                y = y * kept
            yw = y if w is None else y * w
            count = positions if kept is None and w is None else xp.sum(yw)
            target = yw * (1.0 - label_smoothing) if label_smoothing else yw
            if label_smoothing:
                spread = (label_smoothing / k) * (xp.ones_like(y[:, :1, ...]) if kept is None else kept)
                target = target + (spread if w is None else spread * w)
        else:
            target = targets * (1.0 - label_smoothing) + label_smoothing / k if label_smoothing else targets
            target = target if w is None else target * w
            count = positions
        # 0 * -inf is NaN: where a target is 0 its term is 0 whatever the log-probability.
        terms = xp.where(target != 0, target * log_probs, 0.0)
        if isinstance(count, int):
            scale = 1.0 / count
        else:
            counted = count > 0
            scale = xp.where(counted, 1.0 / xp.where(counted, count, 1.0), 0.0)
        loss = -xp.sum(terms) * scale
        grad = (xp.exp(log_probs) * xp.sum(target, axis=1, keepdims=True) - target) * scale
        return loss, grad

    def bce_with_logits(self, logits, targets, pos_weight=None):
        """torch.nn.BCEWithLogitsLoss (mean): the binary cross-entropy of sigmoid(logits) against
        targets in [0, 1] of the same shape, ``pos_weight`` (None, or an array that broadcasts
        against the logits) weighting the positive term.  Returns (loss, dlogits).

        Per element, with c = 1 + (pos_weight - 1) t: loss = (1 - t) x + c softplus(-x) and
        d/dx = c sigmoid(x) - pos_weight t, softplus(-x) = log1p(exp(-|x|)) + max(-x, 0)."""
        xp = self.xp
        count = 1
        for d in logits.shape:
            count *= d
        small = xp.exp(-xp.abs(logits))
        softplus_neg = xp.log1p(small) + xp.maximum(-logits, 0.0)
        sigmoid = xp.where(logits >= 0, 1.0 / (1.0 + small), small / (1.0 + small))
        if pos_weight is None:
            loss = xp.sum((1.0 - targets) * logits + softplus_neg) / count
            grad = (sigmoid - targets) / count
        else:
            c = 1.0 + (pos_weight - 1.0) * targets
            loss = xp.sum((1.0 - targets) * logits + c * softplus_neg) / count
            grad = (c * sigmoid - pos_weight * targets) / count
        return loss, grad
