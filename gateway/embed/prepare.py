"""Rewrites the int8 MiniLM model so its weights stay int8 inside ONNX Runtime, and caches the result.

The shipped model stores every weight as int8 `W_q` plus a float `W_scale` and computes
`Cast(W_q) * W_scale` in the graph. ONNX Runtime's constant folding turns each of those into an fp32
initializer: four times the bytes (the 30522x384 word-embedding table alone becomes 47 MB), plus
prepacked SGEMM copies of the 48 MatMul weights, about 155 MB per worker. Without folding the
session is small but recomputes every weight on every run (slow, and the arena keeps the results).
`prepare` rewrites the two consumers of those weights instead:

    Gather(Cast(W_q) * W_scale, ids)  ->  Cast(Gather(W_q, ids)) * Gather(W_scale, ids)
        only the looked-up rows ever become float;
    MatMul(x, Cast(W_q) * W_scale)    ->  MatMulNBits(x, W_q + 128, W_scale per block), bits=8
        the same int8 values, weight-only; accuracy_level 4 quantises x per block of 32 and runs
        an int8 GEMM (AVX2 / AVX-512 / VNNI kernels in MLAS), faster than the fp32 original.

The session then adds about 43 MB instead of 155 MB; embeddings keep a cosine > 0.999 to the
original's (docs/embedding.md has the measurements). The prepared file is cached under the source's
sha256, so it is built once per model (at image build time: `python -m gateway.embed.prepare`),
and every worker that starts later only reads it. Without `onnx`, or if anything fails, the
original model is used: bigger, but it works.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# Part of the cache key: change it whenever the rewrite changes, so old prepared files are not reused.
RECIPE = "nbits8-b32-a4-v1"
BLOCK = 32  # MatMulNBits block: the activations are quantised per block of this many inputs
ACCURACY_LEVEL = 4  # int8 compute; 1 (fp32 compute) is exact but dequantises at every run, 5x slower
CACHE_ENV = "GATEWAY_MODEL_CACHE"
_INT8 = 3  # onnx.TensorProto.INT8 and FLOAT, without importing onnx at module level
_FLOAT = 1


def default_cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "gateway" / "models"


def prepared_model_path(cache_dir: Path | None = None, *, src: Path | None = None) -> Path:
    """The prepared model for `src` (default: the packaged MiniLM), built on first use; `src` on failure."""
    if src is None:
        from gateway.embed.session import default_model_path

        src = default_model_path()
    try:
        name = f"{src.stem}-{_sha256(src)[:16]}-{RECIPE}.onnx"
        dirs = [cache_dir or default_cache_dir(), Path(tempfile.gettempdir()) / f"gateway-models-{_uid()}"]
        for d in dirs:
            if (d / name).is_file():
                return d / name
        for d in dirs:
            if _writable(d):
                return _build(src, d, name)
        raise OSError(f"no writable cache directory among {', '.join(map(str, dirs))}")
    except Exception as exc:  # onnx missing, a model we can't rewrite, a full disk: all mean the same
        log.warning("embedding model not prepared, using the original (about 110 MB more per worker): %s", exc)
        return src


def prepare(src: Path, dst: Path) -> Path:
    """Write `src` with its int8 weights kept int8 (see the module docstring) to `dst`."""
    import onnx  # only needed here: a prepared model in the cache never imports it

    model = onnx.load(str(src))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}

    replaced: dict[int, list[Any]] = {}
    dropped: set[int] = set()
    added: list[Any] = []
    for weight, (q, scale, cast, mul) in _dequantised_weights(graph, inits).items():
        kept = False
        for node in consumers.get(weight, []):
            new = _rewrite_gather(node, weight, q, scale, inits)
            new = new or _rewrite_matmul(node, weight, q, scale, inits, added)
            if new is None:
                kept = True
            else:
                replaced[id(node)] = new
        if not kept and weight not in outputs:
            dropped.update((id(cast), id(mul)))

    nodes = [new for node in graph.node if id(node) not in dropped for new in replaced.get(id(node), [node])]
    used = {name for node in nodes for name in node.input}
    initializers = [i for i in [*graph.initializer, *added] if i.name in used]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    onnx.helper.set_model_props(model, {"gateway.prepared": RECIPE})
    onnx.save(model, str(dst))
    return dst


# ---------------------------------------------------------------- graph rewrites


def _dequantised_weights(graph: Any, inits: dict[str, Any]) -> dict[str, tuple[str, str, Any, Any]]:
    """{W: (W_q, W_scale, Cast node, Mul node)} for every `W = Cast(W_q int8) * W_scale` on initializers."""
    casts = {
        n.output[0]: n
        for n in graph.node
        if n.op_type == "Cast"
        and n.input[0] in inits
        and inits[n.input[0]].data_type == _INT8
        and _attr(n, "to") == _FLOAT
    }
    found = {}
    for n in graph.node:
        if n.op_type != "Mul":
            continue
        a, b = n.input
        cast_out, scale = (a, b) if a in casts else (b, a)
        if cast_out in casts and scale in inits and inits[scale].data_type == _FLOAT:
            found[n.output[0]] = (casts[cast_out].input[0], scale, casts[cast_out], n)
    return found


def _rewrite_gather(node: Any, weight: str, q: str, scale: str, inits: dict[str, Any]) -> list[Any] | None:
    """Gather the int8 rows (and their scales), then dequantise only those rows."""
    from onnx import helper

    if node.op_type != "Gather" or node.input[0] != weight or (_attr(node, "axis") or 0) != 0:
        return None
    rows, dims = node.input[1], list(inits[scale].dims)
    out, name = node.output[0], node.name or node.output[0]
    q_dims = list(inits[q].dims)
    per_row = len(dims) == len(q_dims) and dims[0] == q_dims[0] and all(d == 1 for d in dims[1:])
    if not per_row and any(d != 1 for d in dims[:1]):  # neither per row nor broadcastable as it is
        return None
    new = [
        helper.make_node("Gather", [q, rows], [out + "_q"], name=name + "_q", axis=0),
        helper.make_node("Cast", [out + "_q"], [out + "_f"], name=name + "_f", to=_FLOAT),
    ]
    if per_row:
        new.append(helper.make_node("Gather", [scale, rows], [out + "_s"], name=name + "_s", axis=0))
        scale = out + "_s"
    new.append(helper.make_node("Mul", [out + "_f", scale], [out], name=name))
    return new


def _rewrite_matmul(
    node: Any, weight: str, q: str, scale: str, inits: dict[str, Any], added: list[Any]
) -> list[Any] | None:
    """MatMul by a per-column int8 weight -> MatMulNBits with 8 bits and the very same int8 values."""
    from onnx import helper, numpy_helper

    if node.op_type != "MatMul" or node.input[1] != weight or node.input[0] == weight:
        return None
    wq = numpy_helper.to_array(inits[q])
    ws = numpy_helper.to_array(inits[scale]).astype(np.float32)
    if wq.ndim != 2 or wq.shape[0] % BLOCK or ws.size not in (1, wq.shape[1]) or (ws.ndim == 2 and ws.shape[0] != 1):
        return None
    k, n = wq.shape
    blocks = k // BLOCK
    # MatMulNBits stores B transposed as unsigned (zero point 128 by default) in blocks along K,
    # with one scale per (column, block): repeat the per-column scale over the blocks.
    packed = (wq.astype(np.int16) + 128).astype(np.uint8).T.reshape(n, blocks, BLOCK)
    scales = np.repeat(np.broadcast_to(ws.reshape(-1), (n,))[:, None], blocks, axis=1).reshape(-1)
    added.append(numpy_helper.from_array(np.ascontiguousarray(packed), q + "_nbits"))
    added.append(numpy_helper.from_array(np.ascontiguousarray(scales), q + "_nbits_scale"))
    return [
        helper.make_node(
            "MatMulNBits",
            [node.input[0], q + "_nbits", q + "_nbits_scale"],
            list(node.output),
            name=node.name or node.output[0],
            domain="com.microsoft",
            K=k,
            N=n,
            bits=8,
            block_size=BLOCK,
            accuracy_level=ACCURACY_LEVEL,
        )
    ]


def _attr(node: Any, name: str) -> Any:
    from onnx import helper

    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), None)


# ---------------------------------------------------------------- cache


def _build(src: Path, cache_dir: Path, name: str) -> Path:
    """Prepare into a temp file, check that it runs, publish it with one atomic rename."""
    final = cache_dir / name
    with _exclusive(cache_dir / f".{name}.lock"):
        if final.is_file():  # another worker built it while we waited for the lock
            return final
        fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=f".{name}.", suffix=".tmp")
        os.close(fd)
        try:
            prepare(src, Path(tmp))
            _smoke_test(Path(tmp))
            os.chmod(tmp, 0o644)
            os.replace(tmp, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    log.info("prepared embedding model %s", final)
    return final


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """One builder at a time, so simultaneous workers don't all import onnx; the rename alone is safe."""
    try:
        import fcntl

        fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o644)
    except (ImportError, OSError):  # no flock here (Windows, some network filesystems): just build
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _smoke_test(path: Path) -> None:
    """The prepared model loads in this ONNX Runtime (MatMulNBits 8-bit needs >= 1.22) and gives finite output."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    ids = np.array([[101, 7592, 2088, 102]], dtype=np.int64)  # [CLS] hello world [SEP]
    feeds = {i.name: ids if i.name == "input_ids" else np.ones_like(ids) if "mask" in i.name else np.zeros_like(ids)
             for i in session.get_inputs()}
    for out in session.run(None, feeds):
        if not np.all(np.isfinite(out)):
            raise ValueError(f"{path.name} produces non-finite values")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _writable(d: Path) -> bool:
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(d, os.W_OK | os.X_OK)


def _uid() -> int:
    return os.getuid() if hasattr(os, "getuid") else 0


# ---------------------------------------------------------------- CLI


PROBES = [
    "How do I reverse a list in Python?",
    "What's the capital of Australia?",
    "Summarise this contract in three bullet points, keeping every date and amount.",
    "The cat sat on the mat.",
    "Wie spät ist es in Tokio?",
    "Refund order #48213 for 19.99 EUR, the parcel never arrived",
    "x",
    "SELECT name FROM users WHERE id = 42;",
]


def main(argv: list[str] | None = None) -> int:
    """Prepare ahead of time (the Dockerfile runs this) and check it against the original model."""
    parser = argparse.ArgumentParser(prog="python -m gateway.embed.prepare", description=main.__doc__)
    parser.add_argument("--cache-dir", type=Path, help=f"default: ${CACHE_ENV} or ~/.cache/gateway/models")
    parser.add_argument("--no-verify", action="store_true", help="skip the comparison with the original model")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from gateway.embed.session import Embedder, default_model_path

    src = default_model_path()
    path = prepared_model_path(args.cache_dir, src=src)
    if path == src:
        return 1  # the warning says why; at build time a fallback must fail the build
    if not args.no_verify:
        new, old = Embedder(model_path=path), Embedder(model_path=src)
        cos = (new.embed(PROBES) * old.embed(PROBES)).sum(axis=1)
        new.close()
        old.close()
        if cos.min() < 0.99:
            print(f"prepared model differs from the original: min cosine {cos.min():.4f}", file=sys.stderr)
            return 1
        log.info("cosine to the original model over %d probes: min %.5f", len(PROBES), cos.min())
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
