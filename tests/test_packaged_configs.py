"""The packaged benchmark configs that replaced the table scripts of benchmarks/ (defenses,
attacks, zoo, foundation): presets, and the grid each expands to on the real datasets' shapes
(no data is read, nothing is trained)."""

from __future__ import annotations

import types
from collections import Counter

import pytest

from mmrobust.experiments.benchmark import expand_grid, load_benchmark, packaged_configs

NEW = ["defenses", "attacks", "zoo", "foundation"]
#: the modalities of the real folders (TikTok has no text features; see the data README)
SHAPES = {
    "tiktok": types.SimpleNamespace(name="tiktok", modalities=("audio", "image")),
    "ml100k": types.SimpleNamespace(name="ml100k", modalities=("image", "text")),
}
FOUNDATION = {
    "mf": {"tiktok": 0.1, "ml100k": 0.01},
    "lightgcn": {"tiktok": 0.01, "ml100k": 0.001},
    "vbpr": {"tiktok": 0.1, "ml100k": 0.01},
}
ZOO = [
    "pop",
    "mf",
    "lightgcn",
    "vbpr",
    "duif",
    "mmgcn",
    "grcn",
    "slmrec",
    "mmgcl",
    "lattice",
    "freedom",
    "bm3",
]


def full_grid(name: str):
    return expand_grid(load_benchmark(name, "full"), SHAPES)


def eval_specs(grid, **where):
    """[(member, entry name, spec)] of the grid's eval cells, members filtered by ``where``."""
    return [
        (m, entry, grid.cells[cid].spec)
        for m in grid.members
        if all(getattr(m, k) == v for k, v in where.items())
        for cid, entry in m.evals
    ]


@pytest.mark.parametrize("name", NEW)
def test_presets(name):
    assert name in packaged_configs()
    base, quick, full = (load_benchmark(name, p) for p in (None, "quick", "full"))
    assert quick.preset == "quick" and full.preset == "full"
    assert full == base.model_copy(update={"preset": "full"})
    assert full.datasets == quick.datasets == ["tiktok", "ml100k"]
    assert full.seeds == [0, 1, 2] and full.tables
    # CI size: one seed, at most three training epochs for every model on every dataset
    # (model-level epochs override the global ones), fine-tuning at most two
    assert len(quick.seeds) == 1 and quick.finetune.epochs <= 2
    for entry in quick.models:
        for dataset in quick.datasets:
            assert {**quick.train, **entry.settings(dataset)[1]}["epochs"] <= 3, (
                entry.name,
                dataset,
            )
    for attack in quick.attacks:
        assert len(getattr(attack, "budgets", [0.05])) <= 2
        if attack.kind in ("promotion", "mismatch"):
            assert attack.promotion["n_targets"] <= 10
    expand_grid(quick, SHAPES)


def test_foundation_grid():
    config = load_benchmark("foundation", "full")
    assert [m.name for m in config.models] == ["pop", "mf", "lightgcn", "vbpr"]
    grid = full_grid("foundation")
    assert Counter(c.kind for c in grid.cells.values()) == {"train": 2 * 4 * 3}
    assert not grid.skipped and not config.attacks
    for cell in grid.cells.values():
        if cell.model in FOUNDATION:
            assert cell.config.model_params["reg_weight"] == FOUNDATION[cell.model][cell.dataset]
            assert cell.config.train.lr == 0.005
    assert {(t.layout, t.metric, t.k) for t in config.tables} == {
        ("robustness", "recall", 20),
        ("robustness", "ndcg", 20),
    }


def test_zoo_grid_skips_models_without_a_feature_route():
    config = load_benchmark("zoo", "full")
    assert [m.name for m in config.models] == ZOO
    grid = full_grid("zoo")
    trained = {
        c.model: c.config
        for c in grid.cells.values()
        if c.kind == "train" and c.dataset == "tiktok"
    }
    assert set(trained) == set(ZOO)
    assert all(c.train.lr == 0.005 for m, c in trained.items() if m != "pop")  # pop trains nothing
    assert trained["mmgcn"].train.epochs == 150 and trained["mmgcn"].train.patience == 10
    # the foundation models are the foundation table's runs (the script reused them)
    assert trained["vbpr"].train.epochs == 1000 and trained["vbpr"].train.patience == 20
    assert trained["lightgcn"].model_params["reg_weight"] == 0.01
    attacked = {(m.model, m.dataset, m.seed) for m, _, _ in eval_specs(grid)}
    features = {"vbpr", "duif", "mmgcn", "grcn", "slmrec", "mmgcl", "lattice"}
    assert attacked == {(model, d, 0) for model in features for d in SHAPES}
    for model, route in [
        ("pop", "none"),
        ("mf", "none"),
        ("lightgcn", "none"),
        ("bm3", "training-only"),
        ("freedom", "training-only"),
    ]:
        assert not any(m.model == model for m, _, _ in eval_specs(grid))
        for dataset in SHAPES:
            assert any(
                s.startswith(f"{dataset}/{model}/") and f"feature route '{route}'" in s
                for s in grid.skipped
            ), (model, dataset)
    assert {(s.attacks[0], s.budgets[0]) for _, _, s in eval_specs(grid)} == {("fgsm", 0.05)}
    assert {(t.metric, t.k) for t in config.tables} == {("recall", 20), ("ndcg", 20)}


def test_attacks_grid():
    grid = full_grid("attacks")
    assert not grid.skipped
    assert Counter(c.kind for c in grid.cells.values())["train"] == 2 * 3
    for dataset in SHAPES:
        for seed in (0, 1, 2):
            specs = eval_specs(grid, dataset=dataset, seed=seed)
            untargeted = {(s.attacks[0], s.budgets[0]) for _, e, s in specs if e == "untargeted"}
            assert untargeted == {
                (a, b) for a in ("random", "fgsm", "pgd") for b in (0.025, 0.05, 0.075, 0.1)
            }
            others = Counter(e for _, e, _ in specs if e != "untargeted")
            if seed:
                assert not others  # promotion and the analyses: seed 0 only
            else:
                assert others == {
                    "promotion": 2 * 4 * 2,
                    "promotion-relu": 2 * 2,
                    "margins": 1,
                    "mismatch": 1,
                }
        relu = [s for _, e, s in eval_specs(grid, dataset=dataset) if e == "promotion-relu"]
        assert all(s.promotion["surrogate"] == "relu" and s.budgets == [0.05] for s in relu)
    tables = {t.name: t for t in load_benchmark("attacks", "full").tables}
    assert tables["promotion"].layout == "bt-table2" and tables["promotion"].budget == 0.05


def test_defenses_grid():
    config = load_benchmark("defenses", "full")
    grid = full_grid("defenses")
    assert not grid.skipped
    kinds = Counter(c.kind for c in grid.cells.values())
    # clean + unimodal per modality (2 on each dataset), per dataset, model and seed
    assert kinds["train"] == 2 * 2 * 3 * 3
    # control, AMR, MB, MB + AMR, UAT, UAT-MC fine-tuned from every clean model
    assert kinds["finetune"] == 6 * 2 * 2 * 3
    control = [
        grid.cells[m.run].config for m in grid.members if m.variant == "Fine-tuned (no defense)"
    ]
    assert len(control) == 12
    assert all(
        not c.defenses and c.train.lr == 2e-4 and c.train.epochs == 50 and c.train.restore == "last"
        for c in control
    )
    mb = next(grid.cells[m.run].config for m in grid.members if m.variant == "Modality balancing")
    assert (
        mb.defenses[0].params.items()
        >= {"lam": 1.0, "n_samples": 20, "eps": 1.0, "steps": 10}.items()
    )
    for model, entry, targets in (("vbpr", "promotion", 100), ("mmgcn", "promotion-mmgcn", 20)):
        promo = [(m, e, s) for m, e, s in eval_specs(grid, model=model) if s.kind == "promotion"]
        assert {e for _, e, _ in promo} == {entry}
        assert {s.promotion["n_targets"] for _, _, s in promo} == {targets}
        assert {m.seed for m, _, _ in promo} == {0}
        assert {m.variant for m, _, _ in promo} == {
            "Multimodal",
            "Fine-tuned (no defense)",
            "UAT",
            "UAT-MC",
        }
        assert {(s.attacks[0], s.betas[0]) for _, _, s in promo} == {
            (a, b) for a in ("fgsm", "pgd") for b in (0.0, 1.0)
        }
    adaptive = [(m, s) for m, _, s in eval_specs(grid) if s.kind == "adaptive"]
    assert {m.seed for m, _ in adaptive} == {0}
    assert all(s.pgd_steps == 50 and s.restarts == 5 and s.budgets == [0.05] for _, s in adaptive)
    untargeted = [(m, s) for m, _, s in eval_specs(grid) if s.kind == "untargeted"]
    assert {m.variant for m, _ in untargeted} >= {
        "Unimodal-audio",
        "Unimodal-text",
        "Adv training",
        "MB + Adv training",
    }
    assert {m.seed for m, _ in untargeted} == {0, 1, 2}
    layouts = {t.name: t.layout for t in config.tables}
    assert layouts["table2"] == "mb-table2"
    assert layouts["promotion"] == layouts["promotion-mmgcn"] == "bt-table2"
