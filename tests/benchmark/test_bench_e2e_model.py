"""The end-to-end model's cache logic on the CPU: decoding after a prefill gives the same logits
as a prefill of the longer prompt (static cache, decode mask, rotary positions)."""
import torch

from benchmark import e2e

CFG = e2e.LlamaConfig(vocab=50, hidden=32, layers=2, heads=4, kv_heads=2, intermediate=64)


def _model():
    torch.manual_seed(0)
    return e2e.Llama(CFG, max_len=16).init_random().eval()


def test_param_count():
    assert CFG.params() == sum(p.numel() for p in _model().parameters())


def test_decode_matches_prefill_of_the_longer_prompt():
    model = _model()
    tokens = torch.randint(0, CFG.vocab, (2, 6))
    with torch.no_grad():
        caches = model.new_cache(2)
        model(tokens[:, :5], torch.arange(5), caches, decode=False)
        step = model(tokens[:, 5:6], torch.tensor([5]), caches, decode=True)
        full = model(tokens, torch.arange(6), model.new_cache(2), decode=False)
    torch.testing.assert_close(step, full, atol=1e-4, rtol=1e-4)


def test_session_greedy_steps_advance_the_position():
    s = e2e.Session(_model(), batch=1, prompt=4)
    with torch.no_grad():
        s.start_decode(s.prefill())
        assert s.step_pos.item() == 4
        s.decode_step()
        s.decode_step()
    assert s.step_pos.item() == 6 and 0 <= s.step_tok.item() < CFG.vocab
