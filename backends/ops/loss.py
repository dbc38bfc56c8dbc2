"""Softmax cross-entropy fused with its gradient and the count of correct predictions, generic version."""
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
