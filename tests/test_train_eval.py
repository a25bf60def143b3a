"""Evaluation and model selection in ``mt5fn train``: eval_* records in metrics.jsonl and
TensorBoard, OUT/best on the best evaluation of a tiny task whose best step is known, early
stopping, OUT/eval.json, and ``mt5fn evaluate`` giving the same numbers on its own."""

from __future__ import annotations

import json
import os

import pytest

from spm import spiece_dir
from train_fixtures import TINY, losses, run_cli, write_data


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaldata")
    files = write_data(str(root))
    pairs = [line.split("\t") for line in open(files["pairs"], encoding="utf-8").read().splitlines()]
    dev = root / "dev.jsonl"
    dev.write_text("".join(json.dumps({"input": source, "target": target}, ensure_ascii=False) + "\n"
                           for source, target in pairs[:16]), encoding="utf-8")
    files.update(dev=str(dev))
    return files


def _records(out):
    with open(out / "metrics.jsonl", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _common(data, out):
    return ["--data", data["pairs"], "--mode", "supervised", "--config", data["config"], "--tokenizer", spiece_dir(),
            "--out", out, "--batch-size", 8, "--lr", "1e-2", "--quiet"]


def test_best_checkpoint_and_early_stopping_on_a_known_task(data, tmp_path):
    # At lr 1e-30 every AdamW update is below float32 resolution of the weights: the model never changes,
    # every evaluation ties with the first, so the first is the best (a tie is no improvement) and
    # patience 2 stops the run at the third evaluation.
    out = tmp_path / "run"
    code, err = run_cli("train", *_common(data, out), "--lr", "1e-30", "--steps", 20, "--eval-data", data["dev"],
                        "--eval-every", 2, "--best-metric", "eval_loss", "--early-stopping-patience", 2)
    assert code == 0, err
    evals = [r for r in _records(out) if "eval_loss" in r]
    assert [r["step"] for r in evals] == [2, 4, 6]  # stopped after two evaluations without improvement
    assert evals[0]["eval_loss"] == evals[1]["eval_loss"] == evals[2]["eval_loss"]
    assert (out / "best").read_text().strip() == "step-00000002"
    assert (out / "latest").read_text().strip() == "step-00000006"
    assert len(losses(out)) == 6 and "early stopping at step 6" in err
    summary = json.loads((out / "eval.json").read_text())
    assert summary["step"] == 6 and summary["eval_loss"] == evals[2]["eval_loss"]
    assert summary["best"] == {"metric": "eval_loss", "mode": "min", "value": evals[0]["eval_loss"], "step": 2,
                               "checkpoint": str(out / "step-00000002")}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert {"train/loss", "eval/loss"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("eval/loss")] == [2, 4, 6]


def test_best_follows_the_metric_while_the_model_learns(data, tmp_path):
    out = tmp_path / "run"
    code, err = run_cli("train", *_common(data, out), "--steps", 12, "--eval-data", data["dev"], "--eval-every", 3,
                        "--best-metric", "eval_loss", "--early-stopping-patience", 3)
    assert code == 0, err
    evals = [r for r in _records(out) if "eval_loss" in r]
    assert [r["step"] for r in evals] == [3, 6, 9, 12]
    best = min(evals, key=lambda r: (r["eval_loss"], r["step"]))
    assert (out / "best").read_text().strip() == f"step-{best['step']:08d}"
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"]  # it learned the pairs it is evaluated on


def test_generation_metrics_best_and_evaluate_agree(data, tmp_path):
    import sacrebleu  # the test extra installs it: a missing one must fail, not skip
    out = tmp_path / "run"
    code, err = run_cli("train", *_common(data, out), "--steps", 6, "--eval-data", data["dev"], "--eval-every", 3,
                        "--eval-generate", "--eval-max-new-tokens", 6, "--best-metric", "eval_chrf")
    assert code == 0, err
    evals = [r for r in _records(out) if "eval_loss" in r]
    assert [r["step"] for r in evals] == [3, 6]
    for record in evals:
        assert set(record) == {"step", "eval_loss", "eval_exact_match", "eval_bleu", "eval_chrf"}
        assert all(0 <= record[k] <= 100 for k in ("eval_exact_match", "eval_bleu", "eval_chrf"))
    best = max(evals, key=lambda r: (r["eval_chrf"], -r["step"]))
    assert (out / "best").read_text().strip() == f"step-{best['step']:08d}"
    assert "eval_chrf" in err  # the final summary line names the metrics

    # mt5fn evaluate on that checkpoint reproduces the run's numbers; BLEU / chrF are sacrebleu's
    predictions, report = tmp_path / "preds.txt", tmp_path / "eval.json"
    code, err = run_cli("evaluate", "--model", out / "best", "--data", data["dev"], "--max-new-tokens", 6,
                        "--predictions", predictions, "--out", report)
    assert code == 0, err
    metrics = json.loads(report.read_text())
    for name in ("eval_loss", "eval_exact_match", "eval_bleu", "eval_chrf"):
        assert metrics[name] == pytest.approx(best[name], rel=1e-6, abs=1e-9), name
    outputs = predictions.read_text(encoding="utf-8").splitlines()
    references = [json.loads(line)["target"] for line in open(data["dev"], encoding="utf-8")]
    assert len(outputs) == len(references) == metrics["examples"]
    assert metrics["eval_bleu"] == pytest.approx(sacrebleu.corpus_bleu(outputs, [references]).score)
    assert metrics["eval_chrf"] == pytest.approx(sacrebleu.corpus_chrf(outputs, [references]).score)
    assert metrics["eval_exact_match"] == pytest.approx(
        100 * sum(o == r for o, r in zip(outputs, references)) / len(references))


def test_eval_resumes_with_its_selection_state(data, tmp_path):
    common = [*_common(data, tmp_path / "x"), "--eval-data", data["dev"], "--eval-every", 2,
              "--best-metric", "eval_chrf", "--eval-generate", "--eval-max-new-tokens", 4]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert run_cli("train", *[straight if a == tmp_path / "x" else a for a in common], "--steps", 6)[0] == 0
    # (the first part ends on an evaluation step: a run evaluates at its end, which then is one of them)
    assert run_cli("train", *[split if a == tmp_path / "x" else a for a in common], "--steps", 4)[0] == 0
    code, err = run_cli("train", *[split if a == tmp_path / "x" else a for a in common], "--steps", 6, "--resume")
    assert code == 0, err
    def strip(out):
        return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in _records(out)]

    assert strip(split) == strip(straight)  # the same losses and evaluations, bit for bit
    assert (split / "best").read_text() == (straight / "best").read_text()
    a, b = json.loads((split / "eval.json").read_text()), json.loads((straight / "eval.json").read_text())
    assert a["best"].pop("checkpoint").endswith(b["best"].pop("checkpoint").rsplit("/", 1)[1]) and a == b


@pytest.mark.parametrize("argv, message", [
    (["--eval-every", "2"], "--eval-every 2 needs eval_data"),
    (["--best-metric", "eval_bleu"], "needs eval_data"),
    (["--eval-data", "DEV", "--best-metric", "eval_bleu"], "needs eval_generate (--eval-generate)"),
    (["--eval-data", "DEV", "--early-stopping-patience", "2"], "--early-stopping-patience needs best_metric"),
    (["--eval-data", "DEV", "--eval-num-beams", "0"], "--eval-num-beams must be an int >= 1"),
])
def test_bad_evaluation_options(data, tmp_path, argv, message):
    argv = [data["dev"] if a == "DEV" else a for a in argv]
    code, err = run_cli("train", *_common(data, tmp_path / "out"), "--steps", 2, *argv)
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_evaluate_bad_input(data, tmp_path):
    code, err = run_cli("evaluate", "--model", tmp_path / "nope", "--data", data["dev"])
    assert code == 2 and err.startswith("mt5fn evaluate: error: --model")
    assert TINY["d_model"] == 32
