"""The calls that `compare_builds.py` and `instruction_counts.py` make with each build: seeded
float32 logits (T = 2, alpha = 0.5), one thread. `SETUP` is source code, run inside each
build's own interpreter; it defines `cases(rows, classes)`, a dict from operation name to a
function of no arguments."""

from __future__ import annotations

OPS = ("loss+grad", "loss", "kl", "ce", "softmax", "log_softmax")

SETUP = r"""
import numpy as np
import kdloss

kdloss.set_num_threads(1)


def cases(rows, classes):
    rng = np.random.default_rng(0)
    t = (rng.standard_normal((rows, classes)) * 3).astype(np.float32)
    s = (t + rng.standard_normal((rows, classes))).astype(np.float32)
    y = rng.integers(0, classes, rows)
    loss = kdloss.DistillationLoss(2.0, 0.5)
    out = np.empty_like(s)
    return {
        "loss+grad": lambda: loss.forward_backward(s, t, y, out=out),
        "loss": lambda: loss(s, t, y),
        "kl": lambda: kdloss.kl_divergence(s, t, temperature=2.0),
        "ce": lambda: kdloss.cross_entropy(s, y),
        "softmax": lambda: kdloss.softmax(s, temperature=2.0),
        "log_softmax": lambda: kdloss.log_softmax(s, temperature=2.0),
    }
"""
