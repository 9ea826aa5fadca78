"""Sentences/s of the MLX M2M100 backend vs transformers on the same tiny model and batches.

    python bench/translate_speed.py [--d-model 32 --layers 2 --sentences 64 --batch-size 16]

Both decode with a KV cache (greedy, or `--beams N`) from the same random checkpoint; the script
checks that the two produce identical tokens, then prints sentences/s and generated tokens/s for
each (best of `--repeats`, the two alternating) and the CPU seconds of the process.
"""

from __future__ import annotations

import argparse
import tempfile
import time

SENTENCES = [
    "How many legs does a spider have?",
    "A spider has eight legs.",
    "Write a short list of three colours: red, green, blue.",
    "The quick brown fox jumps over the lazy dog.",
    "Please explain why the sky is blue in two sentences.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 100 2025.",
    "Name three colours.",
    "Say hello to a friend.",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d-model", type=int, default=32)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--ffn", type=int, default=64)
    ap.add_argument("--sentences", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--beams", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--torch-threads", type=int, default=None)
    ap.add_argument("--eos-boost", type=float, default=4.5, help="0: sentences run to the limit")
    args = ap.parse_args()

    import mlx.core as mx
    import torch
    from transformers import M2M100ForConditionalGeneration

    from clo_mlx.translate.m2m100 import Translator, build_tiny_m2m100, generate

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    with tempfile.TemporaryDirectory() as tmp:
        path = build_tiny_m2m100(
            tmp,
            d_model=args.d_model,
            layers=args.layers,
            heads=args.heads,
            ffn_dim=args.ffn,
            eos_boost=args.eos_boost,
        )
        tr = Translator(path)
        hf = M2M100ForConditionalGeneration.from_pretrained(str(path)).eval()
    texts = [SENTENCES[i % len(SENTENCES)] for i in range(args.sentences)]
    forced = tr.lang_token_id("sw")
    batches = [texts[i : i + args.batch_size] for i in range(0, len(texts), args.batch_size)]
    tr.tokenizer.src_lang = tr.lang_code("en")
    hf_inputs = [tr.tokenizer(b, padding=True, return_tensors="pt") for b in batches]
    mlx_inputs = [tr.encode(b) for b in batches]
    kw = dict(forced_bos_token_id=forced, max_new_tokens=args.max_new_tokens, num_beams=args.beams)

    def run_mlx():
        return [s for ids in mlx_inputs for s in generate(tr.model, ids, **kw)]

    def run_hf():
        out = []
        with torch.no_grad():
            for inp in hf_inputs:
                for row in hf.generate(**inp, do_sample=False, **kw).tolist():
                    seq = row[:1]
                    for t in row[1:]:
                        seq.append(t)
                        if t == 2:
                            break
                    out.append(seq)
        return out

    results, cpu = {}, {}
    runs = {"mlx": run_mlx, "transformers": run_hf}
    seqs = {name: fn() for name, fn in runs.items()}  # warm-up
    best = dict.fromkeys(runs, float("inf"))
    cpu = dict.fromkeys(runs, float("inf"))
    for _ in range(args.repeats):  # alternate, so load from other jobs hits both alike
        for name, fn in runs.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
            cpu[name] = min(cpu[name], time.process_time() - c0)
    results = {name: (seqs[name], best[name]) for name in runs}
    same = results["mlx"][0] == results["transformers"][0]
    n_tokens = sum(len(s) - 1 for s in results["mlx"][0])
    print(
        f"model d_model={args.d_model} layers={args.layers}; {args.sentences} sentences, "
        f"batch {args.batch_size}, max_new_tokens {args.max_new_tokens}, beams {args.beams}; "
        f"mlx device {mx.default_device()}, torch threads {torch.get_num_threads()}"
    )
    print(f"identical tokens: {same}; generated tokens: {n_tokens}")
    for name, (_, sec) in results.items():
        print(
            f"{name:>12}: {args.sentences / sec:8.1f} sentences/s  "
            f"{n_tokens / sec:9.1f} tokens/s  ({sec:.3f} s wall, {cpu[name]:.3f} s CPU)"
        )
    print(f"speed-up mlx/transformers: {results['transformers'][1] / results['mlx'][1]:.2f}x")


if __name__ == "__main__":
    main()
