"""Dictionaries on disk in SAELens's layout: folders written by hand (as SAELens writes them) load
and encode/decode as a hand computation says; saved folders have SAELens's fields; bad folders
are refused naming the file and the key."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import save_file

import hooked.sae as S
from hooked.sae.files import SAEFileError

# d_in = 3, d_sae = 4 (d_out = 2 for transcoders); small numbers a reader can follow
W_ENC = [[1.0, -0.5, 0.2, 0.0], [0.3, 0.8, -1.0, 0.5], [-0.2, 0.1, 0.4, 1.2]]
B_ENC = [0.1, -0.2, 0.0, 0.05]
W_DEC = [[0.5, -0.1, 0.3], [0.2, 0.9, -0.4], [-0.6, 0.1, 0.8], [0.0, 0.5, 0.5]]
B_DEC = [0.05, -0.1, 0.2]
THETA = [0.2, 0.3, 0.05, 0.9]
W_DEC_T = [[0.5, -0.1], [0.2, 0.9], [-0.6, 0.1], [0.0, 0.5]]  # transcoders: d_out = 2
B_DEC_T = [0.05, -0.1]
W_SKIP = [[0.1, 0.0, -0.2], [0.3, 0.4, 0.0]]
X = [[0.7, -0.3, 1.1], [-0.4, 0.9, 0.2], [1.5, 0.6, -0.8]]


def hand(x, kind, *, k=None, theta=None, b_dec_in=True, w_dec=W_DEC, b_dec=B_DEC, w_skip=None, rescale=False):
    """Feature activations and reconstruction of each row, with Python floats (no tensors)."""
    acts_out, recon_out = [], []
    norms = [math.sqrt(sum(v * v for v in row)) for row in w_dec]
    for row in x:
        c = [row[i] - (b_dec[i] if b_dec_in else 0.0) for i in range(3)]
        pre = [sum(c[i] * W_ENC[i][j] for i in range(3)) + B_ENC[j] for j in range(4)]
        if rescale:
            pre = [pre[j] * norms[j] for j in range(4)]
        if kind == "standard":
            a = [max(p, 0.0) for p in pre]
        elif kind == "topk":
            keep = sorted(range(4), key=lambda j: -pre[j])[:k]
            a = [max(pre[j], 0.0) if j in keep else 0.0 for j in range(4)]
        else:  # jumprelu
            a = [pre[j] if pre[j] > theta[j] and pre[j] > 0 else 0.0 for j in range(4)]
        used = [a[j] / norms[j] for j in range(4)] if rescale else a
        d_out = len(b_dec)
        r = [sum(used[j] * w_dec[j][o] for j in range(4)) + b_dec[o] for o in range(d_out)]
        if w_skip is not None:
            r = [r[o] + sum(w_skip[o][i] * row[i] for i in range(3)) for o in range(d_out)]
        acts_out.append(a)
        recon_out.append(r)
    return torch.tensor(acts_out, dtype=torch.float64), torch.tensor(recon_out, dtype=torch.float64)


def write_folder(folder, cfg, tensors):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cfg.json").write_text(json.dumps(cfg))
    save_file(
        {k: torch.tensor(v, dtype=torch.float64) for k, v in tensors.items()},
        folder / "sae_weights.safetensors",
    )
    return folder


def v6(arch, **extra):
    meta = {"sae_lens_version": "6.18.0", "hook_name": "blocks.1.hook_resid_post", "model_name": "tiny"}
    cfg = {
        "architecture": arch,
        "d_in": 3,
        "d_sae": 4,
        "dtype": "float64",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": meta,
    }
    cfg.update(extra)
    return cfg


SAE_WEIGHTS = {"W_enc": W_ENC, "b_enc": B_ENC, "W_dec": W_DEC, "b_dec": B_DEC}
XT = torch.tensor(X, dtype=torch.float64)


@pytest.mark.parametrize(
    "arch, extra, tensors, expect",
    [
        ("standard", {}, {}, dict(kind="standard")),
        ("standard", {"apply_b_dec_to_input": False}, {}, dict(kind="standard", b_dec_in=False)),
        ("topk", {"k": 2, "rescale_acts_by_decoder_norm": False}, {}, dict(kind="topk", k=2)),
        ("topk", {"k": 1, "rescale_acts_by_decoder_norm": True}, {}, dict(kind="topk", k=1, rescale=True)),
        ("jumprelu", {}, {"threshold": THETA}, dict(kind="jumprelu", theta=THETA)),
    ],
)
def test_sae_lens_folders_load_and_compute_as_by_hand(tmp_path, arch, extra, tensors, expect):
    folder = write_folder(tmp_path / arch, v6(arch, **extra), {**SAE_WEIGHTS, **tensors})
    sae = S.load(folder)
    acts, recon = hand(X, **expect)
    assert sae.kind == expect["kind"] and sae.hook == "blocks.1.hook_resid_post"
    assert sae.dtype == torch.float64 and (sae.d_in, sae.width) == (3, 4)
    torch.testing.assert_close(sae.encode(XT), acts)
    torch.testing.assert_close(sae.decode(acts), recon)
    torch.testing.assert_close(sae(XT), recon)
    assert sae.metadata["model_name"] == "tiny"
    if expect["kind"] == "topk":  # the case really exercises a choice of features
        assert bool(((acts > 0).sum(1) <= expect["k"]).all())


def test_a_batchtopk_training_checkpoint_encodes_with_its_threshold(tmp_path):
    # SAELens saves a training BatchTopK as architecture "batchtopk" with a scalar topk_threshold
    cfg = v6("batchtopk", k=2)
    folder = write_folder(tmp_path / "b", cfg, {**SAE_WEIGHTS, "topk_threshold": 0.25})
    sae = S.load(folder)
    assert sae.kind == "batchtopk" and sae.k == 2
    acts, recon = hand(X, "jumprelu", theta=[0.25] * 4)
    torch.testing.assert_close(sae.encode(XT), acts)
    torch.testing.assert_close(sae(XT), recon)


def test_an_older_flat_config_is_read_as_sae_lens_reads_it(tmp_path):
    cfg = {
        "d_in": 3,
        "d_sae": 4,
        "dtype": "float64",
        "hook_point": "blocks.0.hook_resid_pre",
        "activation_fn_str": "topk",
        "activation_fn_kwargs": {"k": 2},
        "apply_b_dec_to_input": False,
        "normalize_activations": False,
        "sae_lens_version": "3.14.0",
        "model_name": "gpt2",
    }
    sae = S.load(write_folder(tmp_path / "old", cfg, SAE_WEIGHTS))
    assert (sae.kind, sae.k, sae.hook) == ("topk", 2, "blocks.0.hook_resid_pre")
    acts, recon = hand(X, "topk", k=2, b_dec_in=False)
    torch.testing.assert_close(sae.encode(XT), acts)
    torch.testing.assert_close(sae(XT), recon)


@pytest.mark.parametrize("arch", ["transcoder", "jumprelu_transcoder", "skip_transcoder"])
def test_transcoder_folders(tmp_path, arch):
    cfg = v6(arch, d_out=2, apply_b_dec_to_input=False)
    cfg["metadata"]["hook_name_out"] = "blocks.1.hook_mlp_out"
    tensors = {"W_enc": W_ENC, "b_enc": B_ENC, "W_dec": W_DEC_T, "b_dec": B_DEC_T}
    if arch == "jumprelu_transcoder":
        tensors["threshold"] = THETA
    if arch == "skip_transcoder":
        tensors["W_skip"] = W_SKIP
    tc = S.load(write_folder(tmp_path / arch, cfg, tensors))
    assert isinstance(tc, S.Transcoder) and tc.hook_out == "blocks.1.hook_mlp_out" and tc.d_out == 2
    kind = "jumprelu" if arch == "jumprelu_transcoder" else "standard"
    acts, recon = hand(
        X,
        kind,
        theta=THETA,
        b_dec_in=False,
        w_dec=W_DEC_T,
        b_dec=B_DEC_T,
        w_skip=W_SKIP if arch == "skip_transcoder" else None,
    )
    torch.testing.assert_close(tc.encode(XT), acts)
    torch.testing.assert_close(tc(XT), recon)
    target = torch.randn(3, 2, dtype=torch.float64)
    torch.testing.assert_close(tc(XT, target, error_term=True), target)


def test_normalised_inputs_as_sae_lens_computes_them(tmp_path):
    for mode in ("constant_norm_rescale", "layer_norm"):
        sae = S.load(write_folder(tmp_path / mode, v6("standard", normalize_activations=mode), SAE_WEIGHTS))
        if mode == "constant_norm_rescale":
            coeff = math.sqrt(3) / XT.norm(dim=-1, keepdim=True)
            z = XT * coeff
            acts, rec = hand(z.tolist(), "standard")
            expect = rec / coeff
        else:
            mu = XT.mean(-1, keepdim=True)
            std = (XT - mu).std(-1, keepdim=True)
            acts, rec = hand(((XT - mu) / (std + 1e-5)).tolist(), "standard")
            expect = rec * std + mu
        torch.testing.assert_close(sae.encode(XT), acts)
        torch.testing.assert_close(sae(XT), expect)
        torch.testing.assert_close(sae(XT, error_term=True), XT)


def test_hook_z_dictionaries_read_heads_flattened():
    sae = S.SAE(6, 5, "standard", reshape_activations="hook_z", seed=0, dtype=torch.float64)
    flat = S.SAE(6, 5, "standard", seed=0, dtype=torch.float64)
    z = torch.randn(2, 4, 2, 3, dtype=torch.float64)  # [batch, pos, heads, d_head]
    torch.testing.assert_close(sae(z), flat(z.flatten(-2)).unflatten(-1, (2, 3)))
    torch.testing.assert_close(sae.encode(z), flat.encode(z.flatten(-2)))


# ---------------------------------------------------------------------- saving
@pytest.mark.parametrize("kind", ["standard", "topk", "batchtopk", "jumprelu"])
def test_saved_folders_round_trip_and_carry_sae_lens_fields(tmp_path, kind):
    sae = S.SAE(5, 12, kind, k=3 if "topk" in kind else None, hook="blocks.2.hook_resid_post", seed=1)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(0.1 * torch.randn_like(p))
    S.save(sae, tmp_path / "s")
    cfg = json.loads((tmp_path / "s" / "cfg.json").read_text())
    assert cfg["architecture"] == ("jumprelu" if kind == "batchtopk" else kind)  # SAELens's inference form
    assert (cfg["d_in"], cfg["d_sae"], cfg["dtype"]) == (5, 12, "float32")
    assert cfg["metadata"]["hook_name"] == "blocks.2.hook_resid_post"
    assert int(cfg["metadata"]["sae_lens_version"].split(".")[0]) >= 6
    if kind == "topk":
        assert cfg["k"] == 3 and cfg["rescale_acts_by_decoder_norm"] is False
    from safetensors.torch import load_file

    shapes = {k: tuple(v.shape) for k, v in load_file(tmp_path / "s" / "sae_weights.safetensors").items()}
    want = {"W_enc": (5, 12), "b_enc": (12,), "W_dec": (12, 5), "b_dec": (5,)}
    if kind in ("jumprelu", "batchtopk"):
        want["threshold"] = (12,)
    assert shapes == want
    back = S.load(tmp_path / "s")
    assert (back.kind, back.k) == (kind, sae.k)
    x = torch.randn(7, 5)
    torch.testing.assert_close(back(x), sae(x))
    with pytest.raises(ValueError, match="already holds a dictionary"):
        S.save(sae, tmp_path / "s")
    S.save(sae, tmp_path / "s", overwrite=True)


def test_a_transcoder_round_trips(tmp_path):
    tc = S.Transcoder(4, 3, 8, "topk", k=2, hook="a", hook_out="b", seed=0)
    S.save(tc, tmp_path / "t")
    back = S.load(tmp_path / "t")
    x = torch.randn(5, 4)
    assert isinstance(back, S.Transcoder) and (back.hook, back.hook_out, back.kind) == ("a", "b", "topk")
    torch.testing.assert_close(back(x), tc(x))


# ---------------------------------------------------------------------- bad folders, bad arguments
def _good(tmp_path):
    return write_folder(tmp_path / "g", v6("jumprelu"), {**SAE_WEIGHTS, "threshold": THETA})


def _rewrite(folder, **tensors):
    from safetensors.torch import load_file

    data = load_file(folder / "sae_weights.safetensors")
    for k, v in tensors.items():
        if v is None:
            del data[k]
        else:
            data[k] = v
    save_file(data, folder / "sae_weights.safetensors")


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(b_enc=None), "key 'b_enc' is missing"),
        (
            dict(W_dec=torch.zeros(4, 5, dtype=torch.float64)),
            r"key 'W_dec' has shape \(4, 5\); expected \(4, 3\)",
        ),
        (
            dict(threshold=torch.tensor([0.1, math.nan, 0.2, 0.3], dtype=torch.float64)),
            "'threshold' holds 1 non-finite",
        ),
        (dict(b_dec=torch.tensor([1, 2, 3])), "key 'b_dec' has dtype torch.int64"),
        (dict(extra=torch.zeros(2)), "unexpected key 'extra'"),
    ],
)
def test_a_damaged_weights_file_is_refused_naming_the_key(tmp_path, change, message):
    folder = _good(tmp_path)
    _rewrite(folder, **change)
    with pytest.raises(SAEFileError, match=message) as e:
        S.load(folder)
    assert "sae_weights.safetensors" in str(e.value)


def test_bad_configs_are_refused_naming_the_file(tmp_path):
    folder = _good(tmp_path)
    (folder / "cfg.json").write_text(json.dumps(v6("gated")))
    with pytest.raises(SAEFileError, match="cfg.json: architecture 'gated'"):
        S.load(folder)
    (folder / "cfg.json").write_text("{not json")
    with pytest.raises(SAEFileError, match="cfg.json is not valid JSON"):
        S.load(folder)
    (folder / "cfg.json").write_text(json.dumps(v6("jumprelu", d_sae=0)))
    with pytest.raises(SAEFileError, match="d_sae must be a positive integer"):
        S.load(folder)
    (folder / "cfg.json").unlink()
    with pytest.raises(FileNotFoundError, match="cfg.json is missing"):
        S.load(folder)


def test_weights_changed_after_saving_are_noticed(tmp_path):
    sae = S.SAE(3, 4, "standard", seed=0)
    S.save(sae, tmp_path / "s")
    _rewrite(tmp_path / "s", b_enc=torch.ones(4))
    with pytest.raises(SAEFileError, match="does not match the sha256"):
        S.load(tmp_path / "s")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(d_in=4, width=0), "width must be a positive integer, got 0"),
        (dict(d_in=-1, width=4), "d_in must be a positive integer, got -1"),
        (dict(d_in=4, width=8, kind="topk"), "kind='topk' needs k"),
        (dict(d_in=4, width=8, kind="topk", k=9), "k=9 is larger than the width 8"),
        (dict(d_in=4, width=8, kind="batchtopk", k=0), "k must be a positive integer, got 0"),
        (dict(d_in=4, width=8, kind="gated"), "kind must be one of"),
    ],
)
def test_bad_sizes_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        S.SAE(**kwargs)


def test_activations_of_another_width_or_dtype_are_refused():
    sae = S.SAE(4, 8, "standard", seed=0)
    with pytest.raises(ValueError, match="width d_in=4, got shape \\(2, 5\\)"):
        sae(torch.randn(2, 5))
    with pytest.raises(TypeError, match="float32 weights and got torch.float64"):
        sae(torch.randn(2, 4, dtype=torch.float64))
