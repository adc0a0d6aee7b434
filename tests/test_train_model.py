"""Tests for the GPT-2 model: shapes and parameter counts, init, padded vocabulary, KV cache, the chunked loss."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from webtext.train.model import GPT, GPTConfig, KVCache, MODEL_SHAPES, named_config, parameter_groups
from webtext.train.generate import SamplingConfig, filter_logits, generate


def tiny(vocab_size: int = 300, **overrides) -> GPT:
    torch.manual_seed(0)
    return GPT(named_config("tiny", vocab_size=vocab_size, block_size=64, **overrides))


@pytest.mark.parametrize("name, millions", [("gpt2", 124.44), ("gpt2-medium", 354.82), ("gpt2-large", 774.03),
                                            ("gpt2-xl", 1557.61)])
def test_released_sizes_have_the_released_parameter_counts(name, millions):
    with torch.device("meta"):
        model = GPT(named_config(name))
    assert model.config.padded_vocab_size == 50304
    assert model.num_parameters() / 1e6 == pytest.approx(millions, abs=0.01)


def test_config_validation_and_round_trip():
    config = named_config("gpt2", n_layer=3, block_size=128)
    assert (config.n_layer, config.n_head, config.n_embd, config.block_size) == (3, 12, 768, 128)
    assert GPTConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="not divisible"):
        GPTConfig(n_head=5, n_embd=64)
    with pytest.raises(ValueError, match="unknown model 'gpt3'"):
        named_config("gpt3")
    assert set(MODEL_SHAPES) >= {"gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "tiny"}


def test_init_follows_gpt2():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=4, n_head=4, n_embd=256, block_size=256, vocab_size=5000))
    assert model.lm_head.weight is model.transformer.wte.weight  # tied
    blocks = model.transformer.h
    c_fc_std = torch.cat([b.mlp.c_fc.weight.flatten() for b in blocks]).std().item()
    c_proj_std = torch.cat([b.mlp.c_proj.weight.flatten() for b in blocks]).std().item()
    assert c_fc_std == pytest.approx(0.02, rel=0.05)
    assert c_proj_std == pytest.approx(0.02 / math.sqrt(2 * 4), rel=0.05)
    assert model.transformer.wpe.weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert torch.all(model.transformer.wte.weight[5000:] == 0)  # padded rows
    assert all(torch.all(b.attn.c_attn.bias == 0) for b in blocks)
    assert torch.all(blocks[0].ln_1.weight == 1)


def test_padded_logits_are_never_exposed_nor_counted():
    model = tiny(vocab_size=300)
    assert model.config.padded_vocab_size == 384
    idx = torch.randint(0, 300, (2, 16))
    logits = model.logits(model.hidden_states(idx))
    assert logits.shape == (2, 16, 300)
    # make the padded rows huge: the loss must not change, since they are outside the softmax
    _, loss_before = model(idx, idx)
    with torch.no_grad():
        model.transformer.wte.weight[300:] = 100.0
    _, loss_after = model(idx, idx)
    assert loss_after.item() == pytest.approx(loss_before.item(), abs=1e-6)
    samples = generate(model, [1, 2, 3], SamplingConfig(max_new_tokens=40, temperature=1.0, seed=1), num_samples=4)
    assert all(0 <= token < 300 for row in samples for token in row)


def test_loss_matches_a_plain_reference():
    model = tiny()
    idx, targets = torch.randint(0, 300, (2, 32)), torch.randint(0, 300, (2, 32))
    _, loss = model(idx, targets)
    logits = model.lm_head(model.hidden_states(idx))[..., :300]
    assert loss.item() == pytest.approx(F.cross_entropy(logits.reshape(-1, 300), targets.reshape(-1)).item(), rel=1e-6)


@pytest.mark.parametrize("compiled", ["no", "chunks", "model-and-chunks"])
def test_chunked_loss_equals_full_loss_and_gradients(compiled):
    """Compiled chunks: each chunk's arithmetic as one torch.compile'd graph (the CUDA default), also inside a
    compiled model (the chunked loss is a graph break there); Inductor's CPU backend here."""
    model = tiny()
    runner = torch.compile(model) if compiled == "model-and-chunks" else model
    idx = torch.randint(0, 300, (3, 64))
    targets = torch.randint(0, 300, (3, 64))
    targets[0, :7] = -1  # ignored positions
    _, full = model(idx, targets)
    full.backward()
    full_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.loss_chunk_rows = 50  # does not divide 192 rows: a ragged last chunk
    model.loss_chunk_compiled = compiled != "no"
    _, chunked = runner(idx, targets)
    chunked.backward()
    assert chunked.item() == pytest.approx(full.item(), rel=1e-6)
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, full_grads[name], rtol=1e-4, atol=1e-6, msg=name)
    with torch.no_grad():
        _, no_grad_loss = model(idx, targets)
    assert no_grad_loss.item() == pytest.approx(full.item(), rel=1e-6)


def test_chunked_loss_uses_the_padded_weight_but_never_the_padded_rows():
    model = tiny()
    with torch.no_grad():
        model.transformer.wte.weight[300:] = 100.0  # huge padded rows: outside the softmax, so no effect
    idx, targets = torch.randint(0, 300, (2, 40)), torch.randint(0, 300, (2, 40))
    logits = model.lm_head(model.hidden_states(idx))[..., :300]
    reference = F.cross_entropy(logits.reshape(-1, 300), targets.reshape(-1))
    reference.backward()
    reference_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.loss_chunk_rows = 32
    _, chunked = model(idx, targets)
    chunked.backward()
    assert chunked.item() == pytest.approx(reference.item(), rel=1e-6)
    wte_grad = model.transformer.wte.weight.grad
    assert wte_grad.shape == (384, 64) and torch.all(wte_grad[300:] == 0)
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, reference_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_kv_cache_decoding_equals_full_recompute():
    model = tiny().eval()
    idx = torch.randint(0, 300, (2, 40))
    with torch.no_grad():
        full = model.logits(model.hidden_states(idx))
        cache = KVCache(model.config, 2, 40, "cpu", torch.float32)
        pieces = [model.logits(model.hidden_states(idx[:, :17], cache))]  # prefill
        pieces += [model.logits(model.hidden_states(idx[:, t:t + 1], cache)) for t in range(17, 30)]  # one at a time
        pieces.append(model.logits(model.hidden_states(idx[:, 30:], cache)))  # several after a prefix
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="exceeds the context"):
        model.hidden_states(torch.zeros(1, 65, dtype=torch.long))


def test_greedy_generation_matches_argmax_without_cache():
    model = tiny().eval()
    prompt = [5, 6, 7]
    [generated] = generate(model, prompt, SamplingConfig(max_new_tokens=10, temperature=0.0))
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(10):
            logits = model.logits(model.hidden_states(torch.tensor([ids])))
            ids.append(int(logits[0, -1].argmax()))
    assert generated == ids[3:]


@pytest.mark.parametrize("prompt_len", [50, 80])
def test_generation_past_the_context_slides_the_window(prompt_len):
    model = tiny().eval()  # block_size 64
    prompt = torch.randint(0, 300, (prompt_len,)).tolist()
    [generated] = generate(model, prompt, SamplingConfig(max_new_tokens=40, temperature=0.0))
    assert len(generated) == 40  # not capped at block_size - len(prompt)
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(40):
            logits = model.logits(model.hidden_states(torch.tensor([ids[-64:]])))
            ids.append(int(logits[0, -1].argmax()))
    assert generated == ids[prompt_len:]


def test_generation_runs_no_forward_for_the_unused_last_token():
    model = tiny().eval()
    calls = []
    model.register_forward_hook(lambda *args: calls.append(1))
    [generated] = generate(model, [1, 2, 3], SamplingConfig(max_new_tokens=5, temperature=0.0))
    assert len(generated) == 5 and len(calls) == 5  # the prefill and four single-token steps


def test_sampling_is_seeded_and_stops_at_eot():
    model = tiny().eval()
    settings = SamplingConfig(max_new_tokens=20, temperature=1.0, top_k=50, seed=3)
    assert generate(model, [1, 2], settings, num_samples=2) == generate(model, [1, 2], settings, num_samples=2)
    first = generate(model, [1, 2], settings)[0]
    stopped = generate(model, [1, 2], settings, eot_id=first[4])[0]
    assert stopped == first[: first.index(first[4])]


def test_filter_logits_top_k_and_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05]]))
    assert torch.isfinite(filter_logits(logits, top_k=2, top_p=None)).sum() == 2
    kept = torch.isfinite(filter_logits(logits, top_k=None, top_p=0.8))
    assert kept.tolist() == [[True, True, True, False, False]]  # 0.5 + 0.2 < 0.8 <= 0.85
    shuffled = logits[:, [3, 0, 4, 2, 1]]
    assert torch.isfinite(filter_logits(shuffled, None, 0.8)).tolist() == [[False, True, False, True, True]]


def test_weight_decay_only_on_matrices():
    model = tiny()
    decay, no_decay = parameter_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_flops_per_token():
    with torch.device("meta"):
        model = GPT(named_config("gpt2"))
    non_embedding_positions = model.num_parameters(include_positions=False)
    assert model.flops_per_token(1024) == 6 * non_embedding_positions + 12 * 12 * 768 * 1024


def test_chunked_loss_under_bf16_autocast_matches_the_plain_loss():
    """The CUDA path runs the chunked loss under bf16 autocast; CPU autocast exercises the same dtype handling."""
    model = tiny()
    idx, targets = torch.randint(0, 300, (2, 64)), torch.randint(0, 300, (2, 64))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, plain = model(idx, targets)
    plain.backward()
    plain_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.loss_chunk_rows = 48
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, chunked = model(idx, targets)
    chunked.backward()
    assert chunked.dtype == torch.float32
    assert chunked.item() == pytest.approx(plain.item(), rel=2e-2)
    for name, param in model.named_parameters():
        assert param.grad.dtype == torch.float32
        torch.testing.assert_close(param.grad, plain_grads[name], rtol=0.1, atol=2e-3, msg=name)

