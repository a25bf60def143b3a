"""Accuracy of low precision against float32 on a trained model (e.g. ``mt5fn demo``'s).

    python benchmarks/accuracy.py --model mt5fn-demo/checkpoint --data mt5fn-demo/data/test.tsv

For each of mt5fn int8 (``mt5fn.quantize``: weight-only), mt5fn int8-dynamic (the same
int8 weights multiplied by int8 activations with per-row dynamic scales, the
kernel choice's int8 x int8 form), mt5fn bf16 (weights cast) and
transformers bf16 (``torch_dtype=torch.bfloat16``) against the same model in
float32 (mt5fn's, equal to transformers' fp32 to round-off):

* greedy outputs identical to float32's, as a share of the held-out inputs;
* teacher-forced top-1 agreement: at every target position of the held-out
  pairs, the arg-max of the low-precision logits equals float32's;
* logits error: max and mean ``|logits - logits_fp32|`` over those positions,
  relative to the largest float32 logit;
* exact match with the references, for each engine.
"""

from __future__ import annotations

import argparse
import sys

import torch

import mt5fn


def read_pairs(path: str) -> list[tuple[str, str]]:
    with open(path, encoding="utf-8") as handle:
        return [tuple(line.rstrip("\n").split("\t", 1)) for line in handle if "\t" in line]


def int8_dynamic(tree):
    """``tree`` with every weight-only int8 leaf in the int8 x int8 form (unchanged where oneDNN lacks it)."""
    from mt5fn.kernels import candidate_forms, linear_form

    def walk(node):
        if isinstance(node, dict):
            if linear_form(node) == "int8":
                candidates, _ = candidate_forms(node, None)
                return candidates["int8-dynamic"]() if "int8-dynamic" in candidates else node
            return {key: walk(value) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(value) for value in node]
        return node

    return walk(tree)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True, help="input<TAB>target lines")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)

    cfg, params = mt5fn.load_pretrained(args.model, dtype=torch.float32)
    tokenizer = mt5fn.Tokenizer.from_pretrained(args.model)
    pairs = read_pairs(args.data)
    quantized = mt5fn.quantize(params, cfg, "int8")
    trees = {"fp32": params, "int8": quantized, "int8-dynamic": int8_dynamic(quantized),
             "bf16": mt5fn.tree_map(lambda t: t.to(torch.bfloat16), params)}
    import transformers

    hf = transformers.AutoModelForSeq2SeqLM.from_pretrained(args.model, dtype=torch.bfloat16).eval()
    hf.set_attn_implementation("eager")

    outputs = {name: [] for name in (*trees, "transformers-bf16")}
    agree = {name: [0, 0] for name in outputs if name != "fp32"}
    errors = {name: [0.0, 0.0, 0] for name in agree}
    for start in range(0, len(pairs), args.batch_size):
        batch = pairs[start:start + args.batch_size]
        encoded = tokenizer.batch_encode([source for source, _ in batch], padding=True)
        ids, mask = encoded["input_ids"], encoded["attention_mask"]
        targets = tokenizer.batch_encode([target for _, target in batch], padding=True)
        labels = targets["input_ids"].masked_fill(targets["attention_mask"] == 0, -100)
        decoder_in = mt5fn.shift_right(labels, cfg)
        with torch.inference_mode():
            logits = {name: mt5fn.forward(tree, cfg, ids, decoder_in, mask).float() for name, tree in trees.items()}
            logits["transformers-bf16"] = hf(input_ids=ids, attention_mask=mask,
                                             decoder_input_ids=decoder_in).logits.float()
            for name, tree in trees.items():
                out = mt5fn.generate(tree, cfg, ids, mask, max_new_tokens=args.max_new_tokens)
                outputs[name] += tokenizer.batch_decode(out, skip_special_tokens=True)
            out = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=args.max_new_tokens,
                              do_sample=False, num_beams=1)
            outputs["transformers-bf16"] += tokenizer.batch_decode(out, skip_special_tokens=True)
        keep = labels != -100
        reference, scale = logits["fp32"], logits["fp32"].abs().max()
        for name in agree:
            agree[name][0] += int((logits[name].argmax(-1) == reference.argmax(-1))[keep].sum())
            agree[name][1] += int(keep.sum())
            diff = (logits[name] - reference).abs()[keep] / scale
            errors[name][0] = max(errors[name][0], float(diff.max()))
            errors[name][1] += float(diff.sum())
            errors[name][2] += diff.numel()

    references = [target for _, target in pairs]
    print(f"{len(pairs)} held-out pairs, model {cfg.model_type} d_model={cfg.d_model} "
          f"layers={cfg.num_layers}+{cfg.num_decoder_layers} vocab={cfg.vocab_size}")
    print("| engine | greedy outputs = fp32's | teacher-forced top-1 = fp32's | max rel. logit error "
          "| mean rel. logit error | exact match |")
    print("|---|---|---|---|---|---|")
    for name, texts in outputs.items():
        exact = sum(a == b for a, b in zip(texts, references)) / len(pairs)
        if name == "fp32":
            print(f"| mt5fn fp32 | - | - | - | - | {exact:.2%} |")
            continue
        same = sum(a == b for a, b in zip(texts, outputs["fp32"])) / len(pairs)
        label = name if name.startswith("transformers") else f"mt5fn {name}"
        print(f"| {label} | {same:.2%} | {agree[name][0] / agree[name][1]:.2%} | {errors[name][0]:.2e} | "
              f"{errors[name][1] / errors[name][2]:.2e} | {exact:.2%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
