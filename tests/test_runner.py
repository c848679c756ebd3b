"""The one runner under every per-layer feature: on a LocalCluster of 2 worker processes every
feature gives exactly the local result (fine-tune deltas, LoRA adapters, gates, fused attention,
heads, Keras and ONNX files, models in memory), threads give it too, every feature takes or
refuses base_model / peft in one line, and edits of a fine-tune edit the fine-tuned weights."""

import json

import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import save_file

import tailscope

distributed = pytest.importorskip("distributed")
torch = pytest.importorskip("torch")

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=40)
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


def _np(sd) -> dict:
    return {k: v.detach().numpy().copy() for k, v in sd.items()}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Small real-shaped models on disk, one per kind of plan the runner must rebuild."""
    d = tmp_path_factory.mktemp("models")
    rng = np.random.default_rng(11)
    out = {}
    # a fine-tune: tuned.npz and base.npz (W - W_base is what is analysed)
    base = {f"l{i}.weight": rng.standard_normal((160 + 20 * i, 120)).astype(np.float32)
            for i in range(3)}
    base["l0.bias"] = np.zeros(160, np.float32)
    tuned = {k: v + 0.05 * rng.standard_normal(v.shape).astype(np.float32) * (1 + int(k[1]))
             for k, v in base.items()}
    np.savez(d / "base.npz", **base)
    np.savez(d / "tuned.npz", **tuned)
    out["base"], out["tuned"] = d / "base.npz", d / "tuned.npz"
    # LSTM and GRU gates, fused attention (TransformerEncoderLayer), q/k/v/o for heads=
    torch.manual_seed(0)
    save_file(_np(torch.nn.LSTM(48, 64, num_layers=2).state_dict()), str(d / "lstm.safetensors"))
    save_file(_np(torch.nn.GRU(40, 56).state_dict()), str(d / "gru.safetensors"))
    enc = torch.nn.TransformerEncoderLayer(d_model=64, nhead=4, dim_feedforward=128)
    save_file(_np(enc.state_dict()), str(d / "encoder.safetensors"))
    attn = {f"attn.{p}_proj.weight": rng.standard_normal((128, 128)).astype(np.float32)
            for p in "qkvo"}
    save_file(attn, str(d / "attn.safetensors"))
    out.update(lstm=d / "lstm.safetensors", gru=d / "gru.safetensors",
               encoder=d / "encoder.safetensors", attn=d / "attn.safetensors")
    # a LoRA adapter folder and its base
    adapter = d / "adapter"
    adapter.mkdir()
    lora = {}
    lora_base = {}
    for m, (n_out, n_in) in {"q": (96, 80), "v": (112, 80)}.items():
        lora[f"base_model.model.{m}.lora_A.weight"] = rng.standard_normal((8, n_in)).astype(
            np.float32)
        lora[f"base_model.model.{m}.lora_B.weight"] = 0.1 * rng.standard_normal(
            (n_out, 8)).astype(np.float32)
        lora_base[f"{m}.weight"] = rng.standard_normal((n_out, n_in)).astype(np.float32)
    save_file(lora, str(adapter / "adapter_model.safetensors"))
    (adapter / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q", "v"]}))
    save_file(lora_base, str(d / "lora_base.safetensors"))
    out.update(adapter=adapter, lora_base=d / "lora_base.safetensors")
    # Keras (h5, the legacy layout) and ONNX (a Gemm and an LSTM)
    h5py = pytest.importorskip("h5py")
    with h5py.File(d / "model.h5", "w") as f:
        kernels = {"conv": rng.standard_normal((3, 3, 16, 24)).astype(np.float32),
                   "dense": rng.standard_normal((150, 90)).astype(np.float32)}
        f.attrs["layer_names"] = [k.encode() for k in kernels]
        for layer, k in kernels.items():
            g = f.create_group(layer)
            g.attrs["weight_names"] = [f"{layer}/kernel:0".encode()]
            g.create_dataset(f"{layer}/kernel:0", data=k)
    out["keras"] = d / "model.h5"
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    w = {"fc.weight": rng.standard_normal((120, 100)).astype(np.float32),
         "lstm.W": rng.standard_normal((1, 96, 100)).astype(np.float32),
         "lstm.R": rng.standard_normal((1, 96, 24)).astype(np.float32)}
    nodes = [helper.make_node("Gemm", ["x", "fc.weight"], ["h"], name="fc", transB=1),
             helper.make_node("Unsqueeze", ["h", "axes"], ["seq"]),
             helper.make_node("LSTM", ["seq", "lstm.W", "lstm.R"], ["y"], name="/rnn/LSTM",
                              hidden_size=24)]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 100])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[*(numpy_helper.from_array(v, name=k) for k, v in w.items()),
                     numpy_helper.from_array(np.array([1], dtype=np.int64), name="axes")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
              str(d / "model.onnx"))
    out["onnx"] = d / "model.onnx"
    return out


def _same(a: pd.DataFrame, b: pd.DataFrame):
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True),
                                  check_exact=True)


CASES = {
    "fine-tune delta": lambda m: dict(source=m["tuned"], base_model=m["base"]),
    "LoRA adapter alone": lambda m: dict(source=m["adapter"], peft="only"),
    "LoRA adapter with its base": lambda m: dict(source=m["adapter"], peft="with_base",
                                                 base_model=m["lora_base"]),
    "LSTM gates": lambda m: dict(source=m["lstm"], min_evals=1),
    "GRU gates": lambda m: dict(source=m["gru"], min_evals=1),
    "fused in_proj_weight": lambda m: dict(source=m["encoder"]),
    "heads=4": lambda m: dict(source=m["attn"], heads=4, min_evals=1),
    "Keras file": lambda m: dict(source=m["keras"], min_evals=1),
    "ONNX file": lambda m: dict(source=m["onnx"], min_evals=1),
}


@pytest.mark.parametrize("case", list(CASES))
def test_analyze_on_dask_equals_the_local_run_bit_for_bit(client, models, case):
    kwargs = CASES[case](models)
    source = kwargs.pop("source")
    local = tailscope.analyze(source, **kwargs)
    remote = tailscope.analyze(source, scheduler=client, **kwargs)
    assert len(local.details) >= 2 and (local.details["status"] == "success").all()
    _same(local.details, remote.details)
    _same(local.skipped, remote.skipped)
    for key, row in local.results.items():
        np.testing.assert_array_equal(row.evals, remote.results[key].evals)


def test_a_model_in_memory_travels_as_its_planned_layers(client):
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Linear(90, 120), torch.nn.LSTM(120, 40))
    local = tailscope.analyze(net, min_evals=1, randomize=True, seed=5)
    remote = tailscope.analyze(net, min_evals=1, randomize=True, seed=5, scheduler=client)
    _same(local.details, remote.details)
    threads = tailscope.analyze(net, min_evals=1, randomize=True, seed=5, jobs=2)
    _same(local.details, threads.details)


def _same_edit(a, b):
    _same(a.details, b.details)
    assert list(a.weights) == list(b.weights)
    for k in a.weights:
        np.testing.assert_array_equal(a.weights[k], b.weights[k])


def test_every_editing_feature_gives_the_local_result_on_dask(client, models):
    enc = models["encoder"]
    _same_edit(tailscope.smooth(enc, "svd", 0.3), tailscope.smooth(enc, "svd", 0.3,
                                                                    scheduler=client))
    _same_edit(tailscope.smooth(enc, "pl"), tailscope.smooth(enc, "pl", scheduler=client))
    _same_edit(tailscope.sharpen(enc, seed=3), tailscope.sharpen(enc, seed=3, scheduler=client))
    _same_edit(tailscope.remove_traps(enc, seed=3),
               tailscope.remove_traps(enc, seed=3, scheduler=client))
    _same_edit(tailscope.prune(enc, 0.4), tailscope.prune(enc, 0.4, scheduler=client))
    a, b = tailscope.traps(enc, seed=3), tailscope.traps(enc, seed=3, scheduler=client)
    _same(a.traps, b.traps)
    _same(a.layers, b.layers)
    for method in ("raw", "euclidean", "cka"):
        x = tailscope.distances(models["tuned"], models["base"], method)
        y = tailscope.distances(models["tuned"], models["base"], method, scheduler=client)
        # matrix products (CKA) round by the number of BLAS threads: a worker has one
        pd.testing.assert_frame_equal(x.details, y.details, check_exact=method == "raw",
                                      rtol=1e-13)
        assert x.delta_W == pytest.approx(y.delta_W, rel=1e-13)


def test_edits_in_threads_equal_the_serial_run(models):
    enc = models["encoder"]
    _same_edit(tailscope.smooth(enc, "svd", 0.3), tailscope.smooth(enc, "svd", 0.3, jobs=2))
    a, b = tailscope.traps(enc, seed=1), tailscope.traps(enc, seed=1, jobs=2)
    _same(a.traps, b.traps)


def test_edits_of_a_fine_tune_edit_the_fine_tuned_weights(models):
    tuned = dict(np.load(models["tuned"]))
    base = dict(np.load(models["base"]))
    pruned = tailscope.prune(models["tuned"], 0.5, base_model=models["base"])
    assert set(pruned.weights) == set(tuned)
    for k, w in pruned.weights.items():
        if k.endswith(".weight"):
            moved = w != tuned[k]
            assert 0.45 < moved.mean() < 0.55  # half of the delta pruned ...
            np.testing.assert_allclose(w[moved], base[k][moved], rtol=1e-6, atol=1e-7)  # to base
        else:
            np.testing.assert_array_equal(w, tuned[k])
    smoothed = tailscope.smooth(models["tuned"], "svd", 0.1, base_model=models["base"])
    for k in ("l0.weight", "l1.weight"):
        delta = smoothed.weights[k].astype(np.float64) - base[k]
        assert np.linalg.matrix_rank(delta, tol=1e-3) == 12  # the delta kept its top 10 %
        assert np.abs(smoothed.weights[k] - tuned[k]).max() < 1.0  # near the fine-tune, not it
    fixed = tailscope.remove_traps(models["tuned"], seed=0, base_model=models["base"])
    for k, w in fixed.weights.items():
        assert w.shape == tuned[k].shape
        assert np.abs(w - tuned[k]).max() < np.abs(tuned[k]).max()  # not the delta alone


@pytest.mark.parametrize("feature", ["smooth", "sharpen", "remove_traps", "prune"])
def test_edits_refuse_peft_in_one_line_naming_the_feature(models, feature):
    call = {"smooth": lambda **k: tailscope.smooth(models["adapter"], **k),
            "sharpen": lambda **k: tailscope.sharpen(models["adapter"], **k),
            "remove_traps": lambda **k: tailscope.remove_traps(models["adapter"], **k),
            "prune": lambda **k: tailscope.prune(models["adapter"], 0.5, **k)}[feature]
    with pytest.raises(ValueError, match=rf"^{feature}: peft= is not supported") as err:
        call(peft="only")
    assert "\n" not in str(err.value)


def test_distances_refuse_base_model_and_peft(models):
    for kw in ({"base_model": models["base"]}, {"peft": True}):
        with pytest.raises(ValueError, match="^distances: (base_model|peft)= is not supported"):
            tailscope.distances(models["tuned"], models["base"], **kw)


def test_traps_and_analyze_take_base_model_and_peft(models):
    t = tailscope.traps(models["tuned"], base_model=models["base"], seed=2)
    a = tailscope.analyze(models["tuned"], base_model=models["base"], randomize=True, seed=2)
    got = t.layers.set_index("name")["rand_num_spikes"]
    want = a.details.set_index("name")["rand_num_spikes"]
    np.testing.assert_array_equal(got.loc[want.index].astype(int), want.astype(int))
    lora = tailscope.traps(models["adapter"], peft="only", seed=2, min_evals=1)
    assert list(lora.layers["name"].str.contains("lora_BA")) == [True, True]


def test_a_seed_of_none_is_drawn_once_and_recorded(models):
    t = tailscope.traps(models["encoder"])
    seed = t.options["seed"]
    assert isinstance(seed, int)
    again = tailscope.traps(models["encoder"], seed=seed)
    _same(t.traps, again.traps)
    e = tailscope.sharpen(models["encoder"])
    _same_edit(e, tailscope.sharpen(models["encoder"], seed=e.options["seed"]))
