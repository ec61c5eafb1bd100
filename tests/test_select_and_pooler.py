"""--select-only chooses on dev without reading test; --train-pooler trains, saves and reloads BERT's pooler."""

import csv
import json

import pytest
import torch

from peftbench.cli import main
from peftbench.methods import REGISTRY, pooler_modules
from peftbench.models.classifier import load_classifier
from peftbench.run import loop as train_module

QUICK = [
    "--max-train-samples",
    "96",
    "--max-eval-samples",
    "48",
    "--batch-size",
    "16",
    "--max-length",
    "32",
    "--no-progress",
]


def test_select_only_chooses_on_dev_and_never_reads_the_test_split(tiny_model, tmp_path, monkeypatch, capsys):
    seen = []
    real_evaluate = train_module.evaluate

    def spy(model, loader, *args, **kwargs):
        seen.append({tuple(e["input_ids"]) for e in loader.dataset})
        return real_evaluate(model, loader, *args, **kwargs)

    monkeypatch.setattr(train_module, "evaluate", spy)
    args = [
        "run",
        "--model",
        str(tiny_model),
        "--preset",
        "tuned",
        "--methods",
        "lora",
        "--lr-grid",
        "1e-3,3e-2",
        "--epochs",
        "2",
        "--out",
        str(tmp_path),
        "--workers",
        "inline",
        "--select-only",
    ]
    assert main(args + QUICK) == 0
    assert len(seen) == 4 and all(s == seen[0] for s in seen)  # 2 rates × 2 epochs, all on dev
    result = json.loads((tmp_path / "runs" / "lora__seed123.json").read_text(encoding="utf-8"))["result"]
    assert "accuracy" not in result and "test" not in result and "weights_dir" not in result
    assert not (tmp_path / "lora__seed123").exists()
    best = max((e["accuracy"], -e["eval_loss"], t["lr"]) for t in result["trials"] for e in t["epochs"])
    assert (result["dev_accuracy"], -result["dev_loss"], result["chosen_lr"]) == best
    rows = list(csv.DictReader((tmp_path / "trials.csv").open(encoding="utf-8")))
    assert len(rows) == 4 and sum(r["chosen"] == "True" for r in rows) == 1
    chosen = next(r for r in rows if r["chosen"] == "True")
    assert float(chosen["lr"]) == result["chosen_lr"] and int(chosen["epoch"]) == result["chosen_epoch"]
    assert "## Learning rates tried" in (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "Learning-rate sensitivity" in (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "dev accuracy" in capsys.readouterr().err
    # A selection run is not a finished comparison: running the same grid with a test evaluation is refused.
    assert main([a for a in args if a != "--select-only"] + QUICK) == 2
    assert "select_only" in capsys.readouterr().err


def test_the_pooler_is_trained_with_the_head_when_asked(tiny_model):
    for name in ("lora", "prompt-tuning", "full", "bitfit"):
        model = load_classifier(str(tiny_model), 2, ["a", "b"], 0)
        assert pooler_modules(model) == ("pooler",)
        built = REGISTRY[name].build(model, head_extra=pooler_modules(model))
        trained = {n for n, p in built.named_parameters() if p.requires_grad}
        assert any("pooler" in n and n.endswith("dense.weight") for n in trained), name
        frozen = REGISTRY[name].build(load_classifier(str(tiny_model), 2, ["a", "b"], 0))
        trained_frozen = {n for n, p in frozen.named_parameters() if p.requires_grad}
        assert any("pooler" in n and n.endswith("dense.weight") for n in trained_frozen) == (name == "full"), name


def test_a_run_with_a_trained_pooler_predicts_what_it_recorded(tiny_model, tmp_path, capsys):
    from peftbench.config.sections import DataConfig
    from peftbench.data import load_labeled_texts, split

    args = [
        "run",
        "--model",
        str(tiny_model),
        "--methods",
        "lora",
        "--epochs",
        "1",
        "--lr",
        "5e-2",
        "--precision",
        "fp32",
        "--train-pooler",
        "on",
        "--out",
        str(tmp_path),
        "--workers",
        "inline",
    ]
    assert main(args + QUICK) == 0
    record = json.loads((tmp_path / "runs" / "lora__seed123.json").read_text(encoding="utf-8"))
    assert record["config"]["train"]["train_pooler"] is True
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "lora__seed123" / "adapter_model.safetensors")
    pooler = next(v for k, v in saved.items() if "pooler" in k and k.endswith("dense.weight"))
    assert not torch.allclose(pooler, load_classifier(str(tiny_model), 2, ["0", "1"], 0).bert.pooler.dense.weight)
    config = DataConfig(max_train_samples=96, max_eval_samples=48)
    texts = split(load_labeled_texts(config), config).eval.texts
    capsys.readouterr()
    assert main(["predict", "--run", str(tmp_path / "lora__seed123"), *texts]) == 0
    labels = [int(line.split("\t")[0]) for line in capsys.readouterr().out.strip().splitlines()]
    assert labels == record["result"]["predictions"]


@pytest.mark.parametrize("flag", ["--train-pooler", "--select-only"])
def test_the_flags_are_documented(flag, capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert flag in capsys.readouterr().out


def test_lr_from_trains_each_method_at_the_rate_its_search_chose(tiny_model, tmp_path, capsys):
    search, final = tmp_path / "search", tmp_path / "final"
    common = ["run", "--model", str(tiny_model), "--preset", "tuned", "--epochs", "1", "--workers", "inline", *QUICK]
    searched = [*common, "--methods", "lora", "--lr-grid", "1e-3,3e-2", "--select-only", "--out", str(search)]
    assert main(searched) == 0
    chosen = json.loads((search / "runs" / "lora__seed123.json").read_text(encoding="utf-8"))["result"]["chosen_lr"]
    trained = [*common, "--methods", "lora", "--seeds", "1,2", "--out", str(final)]
    assert main([*trained, "--lr-from", str(search)]) == 0
    for seed in (1, 2):
        run = json.loads((final / "runs" / f"lora__seed{seed}.json").read_text(encoding="utf-8"))
        assert run["config"]["lr"] == chosen and run["result"]["accuracy"] is not None
    assert f"as its runs in {search} chose it on dev" in (final / "report.md").read_text(encoding="utf-8")
    capsys.readouterr()
    # where the rate came from is not the experiment: the same rates from the folder spelled otherwise are done
    assert main([*trained, "--lr-from", str(search / ".." / "search")]) == 0
    assert "2 run(s) already finished" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--methods", "lora,bitfit"], "no run of bitfit there chose a rate on dev"),
        (["--methods", "lora", "--lr-grid", "1e-3,3e-3"], "give one"),
        (["--methods", "lora", "--data", "OTHER"], "chose its rate for other data"),
    ],
)
def test_lr_from_refuses_what_it_cannot_answer(tiny_model, tmp_path, capsys, extra, message):
    search = tmp_path / "search"
    common = ["run", "--model", str(tiny_model), "--preset", "tuned", "--epochs", "1", "--workers", "inline"]
    quick = [*QUICK, "--max-train-samples", "32", "--max-eval-samples", "16"]
    searched = [*common, *quick, "--methods", "lora", "--lr-grid", "1e-3,3e-2", "--select-only", "--out", str(search)]
    assert main(searched) == 0
    capsys.readouterr()
    out, other = tmp_path / "final", tmp_path / "other.csv"
    other.write_text("review,label\n" + "".join(f"{'good' if i % 2 else 'bad'} {i},{i % 2}\n" for i in range(80)))
    extra = [str(other) if a == "OTHER" else a for a in extra]
    assert main([*common, *quick, *extra, "--lr-from", str(search), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert main([*common, *quick, "--lr-from", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "no run there chose a learning rate on dev" in capsys.readouterr().err
