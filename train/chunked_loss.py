"""Mean cross-entropy of hidden @ weight.T computed in row chunks, so all the logits never exist at once."""
from __future__ import annotations

import functools

import torch


def _chunk_loss(h: torch.Tensor, w: torch.Tensor, targets: torch.Tensor, keep: torch.Tensor,
                vocab_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Summed loss of one chunk of rows, with its fp32 logits and log-sum-exp; padded columns are -inf."""
    logits = (h @ w.t()).float()
    columns = torch.arange(logits.shape[1], device=logits.device)
    logits = logits.masked_fill(columns >= vocab_size, float("-inf"))
    lse = torch.logsumexp(logits, dim=1)
    picked = logits.gather(1, targets[:, None]).squeeze(1)
    return ((lse - picked) * keep).sum(), logits, lse


def _chunk_loss_only(h, w, targets, keep, vocab_size: int) -> torch.Tensor:
    return _chunk_loss(h, w, targets, keep, vocab_size)[0]


def _chunk_loss_and_grads(h, w, targets, keep, inv_count, vocab_size: int):
    """One chunk's summed loss, d(mean loss)/d(h) and its share of d(mean loss)/d(w) (fp32).

    d(loss)/d(logits) is softmax minus one-hot, scaled by 1/count on kept rows; compiled, the
    softmax, the one-hot and the scaling are one pass over the chunk's logits.
    """
    loss_sum, logits, lse = _chunk_loss(h, w, targets, keep, vocab_size)
    one_hot = torch.arange(logits.shape[1], device=logits.device)[None, :] == targets[:, None]
    grad_logits = (torch.exp(logits - lse[:, None]) - one_hot.float()) * (keep * inv_count)[:, None]
    grad_logits = grad_logits.to(h.dtype)
    return loss_sum, grad_logits @ w, (grad_logits.t() @ h).float()


@functools.cache
def _compiled(function):
    return torch.compile(function, dynamic=False, fullgraph=True)


def _chunk_functions(compiled: bool):
    if not compiled:
        return _chunk_loss_only, _chunk_loss_and_grads
    return _compiled(_chunk_loss_only), _compiled(_chunk_loss_and_grads)


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of (hidden @ weight.T)[:, :vocab] that never holds more than one chunk of logits.

    The matmul runs over the whole padded weight (aligned shapes); the padded columns are masked to -inf,
    so they are outside the softmax and their rows get no gradient. The gradients are computed chunk by
    chunk during the forward pass, so memory is O(chunk x vocab) instead of O(rows x vocab); targets of
    -1 are ignored.
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, vocab_size: int, chunk_rows: int, need_grads: bool, compiled: bool):
        loss_fn, grads_fn = _chunk_functions(compiled)
        autocast_on = torch.is_autocast_enabled(hidden.device.type)
        compute_dtype = torch.get_autocast_dtype(hidden.device.type) if autocast_on else hidden.dtype
        w = weight.to(compute_dtype)
        h_all = hidden.to(compute_dtype)
        keep_all = (targets != -1).float()
        safe_targets = targets.clamp(min=0)
        count = keep_all.sum().clamp(min=1)
        want_hidden = need_grads and hidden.requires_grad
        want_weight = need_grads and weight.requires_grad
        grad_hidden = torch.empty_like(hidden) if want_hidden else None
        grad_w = torch.zeros(weight.shape, device=weight.device, dtype=torch.float32) if want_weight else None
        total = torch.zeros((), device=hidden.device, dtype=torch.float32)
        with torch.autocast(hidden.device.type, enabled=False):
            for start in range(0, hidden.shape[0], chunk_rows):
                rows = slice(start, start + chunk_rows)
                if not (want_hidden or want_weight):
                    total += loss_fn(h_all[rows], w, safe_targets[rows], keep_all[rows], vocab_size)
                    continue
                loss_sum, chunk_grad_hidden, chunk_grad_w = grads_fn(
                    h_all[rows], w, safe_targets[rows], keep_all[rows], 1.0 / count, vocab_size)
                total += loss_sum
                if grad_hidden is not None:
                    grad_hidden[rows] = chunk_grad_hidden
                if grad_w is not None:
                    grad_w += chunk_grad_w
        ctx.save_for_backward(grad_hidden, grad_w)
        ctx.weight_dtype = weight.dtype
        return total / count

    @staticmethod
    def backward(ctx, grad_loss):
        grad_hidden, grad_w = ctx.saved_tensors
        grad_weight = None
        if grad_w is not None:
            grad_weight = (grad_w * grad_loss).to(ctx.weight_dtype)
        if grad_hidden is not None:
            grad_hidden = grad_hidden * grad_loss.to(grad_hidden.dtype)
        return grad_hidden, grad_weight, None, None, None, None, None


@torch.compiler.disable
def chunked_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                          vocab_size: int, chunk_rows: int, compiled: bool = False) -> torch.Tensor:
    """The chunked loss; `compiled` runs each chunk's arithmetic as one torch.compile'd graph (for CUDA)."""
    need_grads = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    return _ChunkedLinearCrossEntropy.apply(hidden, weight, targets, vocab_size, chunk_rows, need_grads, compiled)
