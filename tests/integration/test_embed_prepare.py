"""The prepared (int8-kept) MiniLM model: same embeddings, small session, cache, concurrency, fallbacks."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from gateway.embed import prepare as embed_prepare
from gateway.embed.prepare import CACHE_ENV, prepared_model_path
from gateway.embed.session import Embedder, default_model_path

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "benchmarks" / "quality" / "data"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def sentences() -> list[str]:
    """~300 varied texts: STS-B (news, captions, forums) and our adversarial pairs."""
    sts = [line.split("\t") for line in (DATA / "sts-train.csv").read_text(encoding="utf-8").splitlines()]
    adversarial = [json.loads(x) for x in (DATA / "adversarial.jsonl").read_text(encoding="utf-8").splitlines()]
    texts = [f[5] for f in sts[::25]] + [r["a"] for r in adversarial[::2]] + [r["b"] for r in adversarial[1::2]]
    return [*dict.fromkeys(texts), "x", "word " * 400]  # plus a one-letter text and a truncated one


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = prepared_model_path(tmp_path_factory.mktemp("models"))
    assert path != default_model_path()
    return path


@pytest.fixture
def no_leftovers(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    assert not list(tmp_path.rglob("*.tmp"))


def test_embeddings_match_the_original(prepared: Path) -> None:
    texts = sentences()
    assert len(texts) > 250
    new, old = Embedder(model_path=prepared), Embedder(model_path=default_model_path())
    try:
        batches = [texts[i : i + 8] for i in range(0, len(texts), 8)]  # as the gateway batches
        cos = np.concatenate([(new.embed(b) * old.embed(b)).sum(axis=1) for b in batches])
        (tokens_new,) = new.embed_with_tokens(["reverse a list"])
        (tokens_old,) = old.embed_with_tokens(["reverse a list"])
    finally:
        new.close()
        old.close()
    assert cos.mean() >= 0.999
    assert cos.min() >= 0.995
    assert tokens_new.tokens == tokens_old.tokens
    assert (tokens_new.vectors * tokens_old.vectors).sum(axis=1).min() >= 0.99


def test_weights_stay_int8(prepared: Path) -> None:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(prepared))
    inits = model.graph.initializer
    floats = sum(numpy_helper.to_array(i).nbytes for i in inits if i.data_type == onnx.TensorProto.FLOAT)
    ops = [n.op_type for n in model.graph.node]
    assert floats < 4 << 20  # biases, LayerNorm, scales: no dequantised weight (89 MB in fp32) to fold
    assert ops.count("MatMulNBits") == 36  # 6 layers x (Q, K, V, output, up, down)
    assert model.metadata_props[0].value == embed_prepare.RECIPE


def test_session_adds_less_than_60_mb(prepared: Path) -> None:
    """In a fresh process, as a worker loads it: the original adds ~155 MB here."""
    probe = f"""
import onnxruntime as ort, numpy as np
def rss():
    return next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmRSS")) / 1024
before = rss()
o = ort.SessionOptions()
o.intra_op_num_threads = 1
o.enable_cpu_mem_arena = False
o.enable_mem_pattern = False
s = ort.InferenceSession({str(prepared)!r}, o, providers=["CPUExecutionProvider"])
ids = np.array([[101, 7592, 2088, 102]], dtype=np.int64)
s.run(None, {{"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}})
print(rss() - before)
"""
    added = float(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout)
    assert added < 60


def test_cache_is_reused_not_rewritten(prepared: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = prepared.stat()

    def must_not_run(src: Path, dst: Path) -> Path:
        raise AssertionError("prepared again")

    monkeypatch.setattr(embed_prepare, "prepare", must_not_run)
    assert prepared_model_path(prepared.parent) == prepared
    after = prepared.stat()
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (before.st_ino, before.st_mtime_ns, before.st_size)


def test_cache_dir_from_the_environment(prepared: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(prepared.parent))
    assert prepared_model_path() == prepared


def test_concurrent_workers_publish_one_valid_file(prepared: Path, no_leftovers: Path) -> None:
    code = "import sys; from pathlib import Path; from gateway.embed.prepare import prepared_model_path as p; " \
           "print(p(Path(sys.argv[1])))"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(no_leftovers)], env=ENV, stdout=subprocess.PIPE,
                              text=True) for _ in range(4)]
    outs = {p.communicate(timeout=120)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    files = list(no_leftovers.glob("*.onnx"))
    assert [str(f) for f in files] == list(outs)
    assert _sha256(files[0]) == _sha256(prepared)  # complete, and the rewrite is deterministic


def test_missing_onnx_package_falls_back_to_the_original(
    no_leftovers: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` now raises ImportError
    with caplog.at_level(logging.WARNING, logger="gateway.embed.prepare"):
        assert prepared_model_path(no_leftovers) == default_model_path()
    assert len(caplog.records) == 1
    assert "onnx" in caplog.records[0].getMessage()
    assert not list(no_leftovers.glob("*.onnx"))


def test_corrupt_model_falls_back_to_itself(no_leftovers: Path, caplog: pytest.LogCaptureFixture) -> None:
    src = no_leftovers / "src" / "model.onnx"
    src.parent.mkdir()
    src.write_bytes(b"\x08\x07 this is not a protobuf")
    with caplog.at_level(logging.WARNING, logger="gateway.embed.prepare"):
        assert prepared_model_path(no_leftovers / "cache", src=src) == src
    assert len(caplog.records) == 1
    assert not list((no_leftovers / "cache").glob("*.onnx"))


def test_missing_model_falls_back_to_its_path(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="gateway.embed.prepare"):
        assert prepared_model_path(tmp_path, src=tmp_path / "absent.onnx") == tmp_path / "absent.onnx"
    assert len(caplog.records) == 1


def test_unwritable_cache_dir_falls_back_to_a_temp_dir(
    prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("a file where the cache directory should be")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    path = prepared_model_path(blocked / "models")
    assert path.parent == tmp_path / f"gateway-models-{os.getuid()}"
    assert _sha256(path) == _sha256(prepared)


def test_embedder_loads_the_prepared_model_by_default(prepared: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(prepared.parent))
    monkeypatch.setattr(embed_prepare, "prepare", None)  # a cache miss would fail loudly
    e = Embedder()
    try:
        vec = e.embed(["How do I reverse a list in Python?"])[0]
    finally:
        e.close()
    ref = Embedder(model_path=prepared)
    try:
        np.testing.assert_allclose(vec, ref.embed(["How do I reverse a list in Python?"])[0], atol=1e-6)
    finally:
        ref.close()


def test_cli_prepares_and_checks_against_the_original(no_leftovers: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "gateway.embed.prepare", "--cache-dir", str(no_leftovers)],
                          env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).is_file()
    assert "cosine to the original" in done.stderr


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
