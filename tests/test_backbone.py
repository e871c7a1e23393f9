"""Tests for memos.backbone: GGUF loading, tokenizer, dense model vs transformers, MoE
routing/pruning/skipping invariants, KV cache, generation, prepared checkpoint and CLI.

One session-scoped fixture reads the GGUF once (~10 s); everything else is small.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import sys

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (extra: backbone)")
pytest.importorskip("gguf", reason="gguf is not installed (extra: backbone)")

from memos.backbone.gguf import find_smollm2_gguf  # noqa: E402

try:
    GGUF_PATH = find_smollm2_gguf()
except FileNotFoundError as exc:  # pragma: no cover - depends on the environment
    pytest.skip(f"SmolLM2 GGUF unavailable: {exc}", allow_module_level=True)

from memos.backbone.generate import _holdback, format_chat, generate  # noqa: E402
from memos.backbone.model import Llama, LlamaConfig, load_kv_cache, save_kv_cache  # noqa: E402
from memos.backbone.moe import (  # noqa: E402
    MoEConfig,
    MoEMLP,
    ffn_read_frac,
    prune_experts,
    reset_stats,
    select_experts,
    set_routing,
    to_moe,
)

PROMPTS = [
    "The capital of France is",
    "<|im_start|>user\nWhat is 2+2? Answer in 3 words.<|im_end|>\n<|im_start|>assistant\n",
    "Maya: Did you sleep at all?\nDaniel: A little. The dog kept barking, so I",
]


@pytest.fixture(scope="session")
def contents():
    from memos.backbone.gguf import read_gguf

    # One torch thread: on the shared 2-core CI box, OpenMP spin-waiting under contention
    # costs more than the second thread gains for these small batch-1 workloads.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield read_gguf(GGUF_PATH)
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tok(contents):
    from tokenizers import Tokenizer

    return Tokenizer.from_str(contents.tokenizer_json)


@pytest.fixture(scope="session")
def dense(contents):
    return Llama.from_tensors(LlamaConfig(**contents.hparams), contents.tensors)


@pytest.fixture()
def moe(contents):
    """A fresh MoE model sharing the (read-only) weights of the session fixture."""
    return to_moe(Llama.from_tensors(LlamaConfig(**contents.hparams), contents.tensors))


def ids_of(tok, text: str) -> torch.Tensor:
    return torch.tensor([tok.encode(text).ids])


# -- loader and tokenizer ---------------------------------------------------------------


def test_hparams_and_tied_embeddings(contents, dense):
    hp = contents.hparams
    assert (hp["n_layer"], hp["n_embd"], hp["n_hidden"]) == (30, 576, 1536)
    assert (hp["n_head"], hp["n_kv_head"], hp["rope_theta"]) == (9, 3, 100000.0)
    assert hp["tied_embeddings"] and dense.lm_head.weight is dense.embed_tokens.weight
    assert "<|im_start|>" in contents.chat_template


@pytest.mark.parametrize(
    "text",
    [
        "Hello world!",
        "  leading spaces, tabs\tand\nnew\n\nlines  ",
        "digits 1234567890 and 3.14159",
        "unicode: café naïve 日本語 emoji 🎉👍🏽",
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
        "",
    ],
)
def test_tokenizer_round_trip(tok, text):
    assert tok.decode(tok.encode(text).ids, skip_special_tokens=False) == text


def test_tokenizer_known_ids(tok):
    assert tok.encode("The capital of France is").ids == [504, 3575, 282, 4649, 314]
    assert tok.encode("<|im_start|>user").ids[:1] == [1]  # special token stays atomic
    digits = [tok.encode(c).ids[0] for c in "2024"]
    assert tok.encode("2024").ids == digits  # digits are split one by one


def test_chat_template_format():
    p = format_chat([{"role": "user", "content": "Hi"}])
    assert p.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert p.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    p = format_chat([{"role": "system", "content": "S"}], add_generation_prompt=False)
    assert p == "<|im_start|>system\nS<|im_end|>\n"
    with pytest.raises(ValueError):
        format_chat([{"content": "no role"}])


# -- dense model vs the transformers reference ------------------------------------------


@pytest.mark.skipif(importlib.util.find_spec("transformers") is None, reason="transformers missing")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_dense_matches_transformers_reference(contents, dense, tok):
    """HF LlamaForCausalLM with Q/K un-permuted by transformers' own GGUF code."""
    import numpy as np
    from gguf import GGUFReader
    from gguf.quants import dequantize
    from transformers import LlamaConfig as HFConfig
    from transformers import LlamaForCausalLM
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    hp = contents.hparams
    proc = LlamaTensorProcessor(
        config={"num_attention_heads": hp["n_head"], "num_key_value_heads": hp["n_kv_head"]}
    )
    sd = {f"model.{k}": v for k, v in contents.tensors.items()}
    reader = GGUFReader(str(GGUF_PATH))
    for t in reader.tensors:
        if ".attn_q." in t.name or ".attn_k." in t.name:
            shape = tuple(int(s) for s in reversed(t.shape))
            raw = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(shape)
            w = proc.process(weights=raw, name=t.name).weights
            layer = t.name.split(".")[1]
            key = (
                f"model.layers.{layer}.self_attn.{'q' if '.attn_q.' in t.name else 'k'}_proj.weight"
            )
            assert torch.equal(torch.from_numpy(np.ascontiguousarray(w)), sd[key]), key
    cfg = HFConfig(
        vocab_size=hp["vocab_size"],
        hidden_size=hp["n_embd"],
        intermediate_size=hp["n_hidden"],
        num_hidden_layers=hp["n_layer"],
        num_attention_heads=hp["n_head"],
        num_key_value_heads=hp["n_kv_head"],
        rms_norm_eps=hp["norm_eps"],
        rope_theta=hp["rope_theta"],
        max_position_embeddings=hp["max_seq_len"],
        tie_word_embeddings=True,
    )
    try:  # skip the random init of 135M parameters that are overwritten right after
        from transformers.modeling_utils import no_init_weights
    except ImportError:  # pragma: no cover - older/newer transformers
        no_init_weights = contextlib.nullcontext
    with no_init_weights():
        ref = LlamaForCausalLM(cfg).eval()
    missing, unexpected = ref.load_state_dict(sd, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}
    ref.tie_weights()
    with torch.inference_mode():
        for text in PROMPTS:
            ids = ids_of(tok, text)
            ours, _ = dense(ids)
            theirs = ref(ids).logits
            assert (ours - theirs).abs().max().item() <= 1e-3, text


# -- KV cache ---------------------------------------------------------------------------


def test_kv_cache_continuation_and_safetensors(dense, tok, tmp_path):
    ids = ids_of(tok, PROMPTS[2])
    with torch.inference_mode():
        full, _ = dense(ids)
        _, cache = dense(ids[:, :-3])
        assert len(cache) == 30 and cache[0][0].shape == (1, 3, ids.shape[1] - 3, 64)
        save_kv_cache(tmp_path / "prefix.safetensors", cache)
        cache = load_kv_cache(tmp_path / "prefix.safetensors")
        rest, new = dense(ids[:, -3:], cache, ids.shape[1] - 3)
    assert (rest - full[:, -3:]).abs().max().item() < 1e-3
    assert new[0][0].shape[2] == ids.shape[1]
    with pytest.raises(ValueError):
        dense(ids[:, -1:], cache, 0)


# -- MoE --------------------------------------------------------------------------------


def test_kv_cache_grows_in_place_but_never_changes_a_cache_handed_out():
    from memos.backbone.model import extend_kv

    def step(value: float) -> torch.Tensor:
        return torch.full((1, 3, 1, 4), value)

    with torch.inference_mode():
        a = extend_kv(torch.randn(1, 3, 5, 4), step(1.0))
        b = extend_kv(a, step(2.0))  # a is its buffer's end: written in place
        assert b.data_ptr() == a.data_ptr()
        c = extend_kv(a, step(3.0))  # a second continuation of a: copied
        assert c.data_ptr() != a.data_ptr()
        assert b[0, 0, 5:, 0].tolist() == [1.0, 2.0] and c[0, 0, 5:, 0].tolist() == [1.0, 3.0]
        s = b[:, :, :-1]  # a slice is not a buffer's end: copied
        assert extend_kv(s, step(4.0)).data_ptr() != b.data_ptr() and b[0, 0, 6, 0] == 2.0
    past = torch.randn(1, 3, 2, 4, requires_grad=True)  # outside inference mode: plain cat
    assert torch.equal(extend_kv(past, step(5.0)), torch.cat((past, step(5.0)), dim=2))


def test_all_experts_active_is_exactly_dense(dense, moe, tok):
    ids = ids_of(tok, PROMPTS[0])
    with torch.inference_mode():
        ref, cache = dense(ids)
        set_routing(moe, MoEConfig(top_k=1536))
        out, _ = moe(ids)
        step_ref, _ = dense(ids[:, :1], [(k[:, :, :-1], v[:, :, :-1]) for k, v in cache], 4)
        step, _ = moe(ids[:, :1], [(k[:, :, :-1], v[:, :, :-1]) for k, v in cache], 4)
    assert torch.equal(out, ref)
    assert torch.equal(step, step_ref)


@pytest.mark.parametrize(
    "cfg",
    [
        MoEConfig(top_k=768),
        MoEConfig(down_k=768),
        MoEConfig(top_k=1152, down_k=768),
        MoEConfig(top_k=768, n_proto=8),
        MoEConfig(down_k=768, skip_beta=0.05),
        MoEConfig(in_k=403, down_k=768),
    ],
    ids=["topk", "down", "two-stage", "proto", "skip", "input-sparse"],
)
def test_sparse_decode_matches_masked_path(moe, tok, cfg):
    """The batch-1 gather path computes the same function as the masked (prefill) path."""
    ids = ids_of(tok, PROMPTS[2])
    set_routing(moe, cfg)
    with torch.inference_mode():
        full, _ = moe(ids)
        _, cache = moe(ids[:, :-1])
        last, _ = moe(ids[:, -1:], cache, ids.shape[1] - 1)
    assert (last[0, -1] - full[0, -1]).abs().max().item() < 1e-3


@pytest.mark.parametrize(
    "cfg", [MoEConfig(), MoEConfig(in_k=461, down_k=768)], ids=["dense", "input-sparse"]
)
def test_decode_with_two_threads_splits_the_gather_and_matches(moe, tok, cfg):
    """With 2 threads the batch-1 decode sums rows in 2 bags, dense config included."""
    ids = ids_of(tok, PROMPTS[2])
    set_routing(moe, cfg)
    threads = torch.get_num_threads()
    with torch.inference_mode():
        full, _ = moe(ids)
        _, cache = moe(ids[:, :-1])
        torch.set_num_threads(2)
        try:
            reset_stats(moe)
            last, _ = moe(ids[:, -1:], cache, ids.shape[1] - 1)
        finally:
            torch.set_num_threads(threads)
    assert (last[0, -1] - full[0, -1]).abs().max().item() < 1e-3
    in_share = (cfg.in_k or 576) / 576
    down_share = (cfg.down_k or 1536) / 1536
    assert ffn_read_frac(moe, 1536) == pytest.approx((2 * in_share + down_share) / 3)


def test_decode_layout_keeps_values_and_picks_the_fast_layout(dense):
    from memos.backbone.model import decode_layout

    w = torch.arange(12.0).view(4, 3)
    fast = decode_layout(w)
    assert torch.equal(fast, w) and fast.t().is_contiguous()  # out > in: column-major
    assert decode_layout(w.t()).is_contiguous()  # out <= in: row-major
    mlp = dense.layers[0].mlp
    assert mlp.gate_proj.weight.t().is_contiguous() and mlp.down_proj.weight.is_contiguous()
    assert dense.lm_head.weight is dense.embed_tokens.weight


def test_dense_prefill_runs_prompts_dense_and_routes_decode_and_calibration(dense, moe, tok):
    ids = ids_of(tok, PROMPTS[2])
    set_routing(moe, MoEConfig(in_k=403, down_k=768, dense_prefill=True))
    with torch.inference_mode():
        ref, cache = dense(ids)
        out, _ = moe(ids)  # a prompt: the dense FFN, exactly
        past = [(k[:, :, :-1], v[:, :, :-1]) for k, v in cache]
        step, _ = moe(ids[:, -1:], past, ids.shape[1] - 1)
        reset_stats(moe, track_usage=True)  # calibration and perplexity route every token
        routed, _ = moe(ids)
    assert torch.equal(out, ref)
    assert (step[0, -1] - ref[0, -1]).abs().max().item() > 1e-3  # the decode step is routed
    assert (routed - ref).abs().max().item() > 1e-3
    assert ffn_read_frac(moe, 1536) < 0.7


def test_select_experts_invariants():
    g = torch.Generator().manual_seed(0)
    w = torch.rand(6, 64, generator=g)
    m = select_experts(w, 10)
    assert m.sum(-1).tolist() == [10] * 6
    thresh = w.topk(10, dim=-1).values[:, -1:]
    assert torch.equal(m, w >= thresh)
    # prototyping: k/P from each of P contiguous groups
    m = select_experts(w, 16, n_proto=4)
    assert m.view(6, 4, 16).sum(-1).eq(4).all()
    # shared experts always on, on top of k
    shared = torch.zeros(64, dtype=torch.bool)
    shared[[3, 40]] = True
    m = select_experts(w, 10, shared=shared)
    assert m[:, [3, 40]].all() and m.sum(-1).le(12).all()
    # skipping only removes selected experts under beta * top
    base = select_experts(w, 20)
    m = select_experts(w, 20, skip_beta=0.5)
    assert not (m & ~base).any()
    top = w.amax(-1, keepdim=True)
    assert torch.equal(m, base & (w >= 0.5 * top))
    # ineligible experts (-inf) are never selected
    w2 = w.clone()
    w2[:, :60] = float("-inf")
    assert select_experts(w2, 10).sum(-1).tolist() == [4] * 6


def test_ffn_read_fraction_counts_router(moe, tok):
    ids = ids_of(tok, PROMPTS[2])
    set_routing(moe, MoEConfig(top_k=768))
    reset_stats(moe)
    with torch.inference_mode():
        moe(ids)
    assert ffn_read_frac(moe, 1536) == pytest.approx((1 + 0.5 + 0.5) / 3)
    set_routing(moe, MoEConfig(down_k=384))
    reset_stats(moe)
    with torch.inference_mode():
        moe(ids)
    assert ffn_read_frac(moe, 1536) == pytest.approx((1 + 1 + 0.25) / 3)
    set_routing(moe, MoEConfig(in_k=288, down_k=384))  # gate and up read half their columns
    reset_stats(moe)
    with torch.inference_mode():
        moe(ids)
    assert ffn_read_frac(moe, 1536) == pytest.approx((0.5 + 0.5 + 0.25) / 3)


def test_set_routing_rejects_bad_configs(moe):
    with pytest.raises(ValueError):
        set_routing(moe, MoEConfig(top_k=100, n_proto=8))  # 100 % 8 != 0
    with pytest.raises(ValueError):
        set_routing(moe, MoEConfig(skip_beta=1.5))
    with pytest.raises(ValueError):
        set_routing(moe, MoEConfig(n_shared=4))  # no usage ranking given
    with pytest.raises(ValueError):
        set_routing(moe, MoEConfig(in_k=300, top_k=768))  # input sparsity: down_k only
    with pytest.raises(ValueError):
        set_routing(moe, MoEConfig(in_k=0))
    with pytest.raises(ValueError):
        MoEMLP(torch.zeros(8, 4), torch.zeros(8, 4), torch.zeros(4, 8), group_size=3)


def test_pruning_removes_only_the_least_used_experts():
    g = torch.Generator().manual_seed(1)
    n, d = 32, 8
    gate, up, down = (
        torch.randn(n, d, generator=g),
        torch.randn(n, d, generator=g),
        torch.randn(d, n, generator=g),
    )

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleList([torch.nn.Module()])
            self.layers[0].mlp = MoEMLP(gate, up, down)

    model = Tiny()
    usage = torch.arange(n, dtype=torch.float64)  # expert i used i times: 0..7 go first
    kept = prune_experts(model, [usage], 0.25)[0]
    assert kept.tolist() == list(range(8, 32))
    x = torch.randn(3, d, generator=g)
    down_masked = down.clone()
    down_masked[:, :8] = 0  # the dense FFN without the pruned neurons
    expect = torch.nn.functional.silu(x @ gate.T) * (x @ up.T) @ down_masked.T
    assert torch.allclose(model.layers[0].mlp(x), expect, atol=1e-5)


def test_skipping_changes_only_low_weight_experts(moe, tok):
    ids = ids_of(tok, PROMPTS[0])
    set_routing(moe, MoEConfig(down_k=768))
    reset_stats(moe)
    with torch.inference_mode():
        base, _ = moe(ids)
    frac_base = ffn_read_frac(moe, 1536)
    set_routing(moe, MoEConfig(down_k=768, skip_beta=0.0))
    with torch.inference_mode():
        same, _ = moe(ids)
    assert torch.equal(base, same)  # beta = 0 skips nothing
    set_routing(moe, MoEConfig(down_k=768, skip_beta=0.05))
    reset_stats(moe)
    with torch.inference_mode():
        moe(ids)
    assert ffn_read_frac(moe, 1536) < frac_base


# -- generation -------------------------------------------------------------------------


def test_holdback():
    assert _holdback("Hello <|im", ["<|im_end|>"]) == 4
    assert _holdback("Hello", ["<|im_end|>"]) == 0
    assert _holdback("abc\nUs", ["\nUser:", "xyz"]) == 3


def test_generation_stops_on_stop_sequences(dense, tok):
    prompt = format_chat([{"role": "user", "content": "Count from 1 to 10, separated by commas."}])
    full = "".join(generate(dense, tok, prompt, max_new_tokens=10, stop_token_ids=[2]))
    assert len(full) > 6
    stop = full[3:6]
    pieces = list(generate(dense, tok, prompt, max_new_tokens=10, stop=[stop], stop_token_ids=[2]))
    text = "".join(pieces)
    assert stop not in text and full.startswith(text) and len(text) == full.index(stop)
    assert list(generate(dense, tok, prompt, max_new_tokens=0)) == []
    kw = {"max_new_tokens": 6, "temperature": 0.8, "top_p": 0.9, "seed": 3}
    assert "".join(generate(dense, tok, prompt, **kw)) == "".join(
        generate(dense, tok, prompt, **kw)
    )
    with pytest.raises(ValueError):
        list(generate(dense, tok, prompt, top_p=0.0))


def test_generation_with_prefix_cache(dense, tok):
    prefix = format_chat(
        [{"role": "system", "content": "Memory: Tom's dog is Biscuit."}],
        add_generation_prompt=False,
    )
    rest = "<|im_start|>user\nWhat is the name of Tom's dog?<|im_end|>\n<|im_start|>assistant\n"
    with torch.inference_mode():
        _, cache = dense(torch.tensor([tok.encode(prefix).ids]))
    a = "".join(
        generate(
            dense,
            tok,
            tok.encode(rest).ids,
            prefix_cache=cache,
            max_new_tokens=8,
            stop_token_ids=[2],
        )
    )
    b = "".join(generate(dense, tok, prefix + rest, max_new_tokens=8, stop_token_ids=[2]))
    assert a == b


# -- prepared checkpoint, loader and CLI ------------------------------------------------


@pytest.fixture(scope="session")
def prepared(contents, tmp_path_factory):
    from memos.backbone.prepare import prepare

    root = tmp_path_factory.mktemp("memos-data")
    prepare(root, gguf_path=str(GGUF_PATH), progress=False, calib_tokens=256, contents=contents)
    return root


def test_prepare_and_load_backbone(prepared, tmp_path, monkeypatch):
    import json

    from memos.backbone import load_backbone, resolve_data_dir
    from memos.backbone.checkpoint import BackboneNotPrepared, config_fingerprint

    cfg = json.loads((resolve_data_dir(prepared) / "config.json").read_text())
    assert cfg["fingerprint"] == config_fingerprint(cfg)
    assert cfg["source"]["sha256"] and cfg["default_variant"] in cfg["variants"]
    monkeypatch.setenv("MEMOS_DATA_DIR", str(prepared))
    bb = load_backbone()
    assert bb.variant == cfg["default_variant"] and bb.fingerprint == cfg["fingerprint"]
    reply = bb.generate(bb.chat_prompt([{"role": "user", "content": "Say hi"}]), max_new_tokens=4)
    assert isinstance(reply, str) and reply
    bb.use("pruned_25")
    assert bb.model.layers[0].mlp.n_neurons == 1152
    bb.use("dense")
    assert bb.model.layers[0].mlp.n_neurons == 1536
    with pytest.raises(ValueError):
        bb.use("nope")
    with pytest.raises(BackboneNotPrepared, match="memos backbone prepare"):
        load_backbone(tmp_path / "empty")


def test_cli_wiring_and_chat(prepared, monkeypatch, capsys):
    from memos.backbone.cli import add_backbone_commands

    parser = argparse.ArgumentParser(prog="memos")
    parser.add_argument("--data-dir", default=None)
    add_backbone_commands(parser.add_subparsers(dest="command"))
    for cmd in ("prepare", "eval", "chat"):
        args = parser.parse_args(["--data-dir", str(prepared), "backbone", cmd])
        assert callable(args.func)
    args = parser.parse_args(
        ["--data-dir", str(prepared), "backbone", "chat", "--max-tokens", "3", "--variant", "dense"]
    )
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hello\n\n"))
    assert args.func(args) == 0
    assert capsys.readouterr().out.strip()


def test_coactivation_groups_recover_blocks_and_permutation_keeps_function():
    from memos.backbone.moe import coactivation_groups, permute_neurons

    g = torch.Generator().manual_seed(2)
    # 8 neurons in 4 hidden pairs {0,5} {1,6} {2,7} {3,4}: each pair fires together
    pairs = [(0, 5), (1, 6), (2, 7), (3, 4)]
    fire = torch.rand(200, 4, generator=g) < torch.tensor([0.9, 0.6, 0.4, 0.2])
    active = torch.zeros(200, 8, dtype=torch.bool)
    for p, (i, j) in enumerate(pairs):
        active[:, i] = active[:, j] = fire[:, p]
    perm = coactivation_groups(active, 2)
    assert sorted(perm.tolist()) == list(range(8))
    assert {tuple(sorted(perm[k : k + 2].tolist())) for k in range(0, 8, 2)} == set(pairs)
    gate, up, down = torch.randn(8, 4), torch.randn(8, 4), torch.randn(4, 8)
    x = torch.randn(3, 4)
    a, b = MoEMLP(gate, up, down), permute_neurons(MoEMLP(gate, up, down), perm, 2)
    assert b.n_experts == 4 and torch.allclose(a(x), b(x), atol=1e-5)
