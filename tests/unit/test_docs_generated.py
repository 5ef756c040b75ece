"""The documentation a user reads: generated pages current, the README a front door, links and captions sound."""

from __future__ import annotations

import io
import re
import subprocess

import pytest
from conftest import ROOT

from traindyn.report import docs
from traindyn.report.common import ci, fmt, sign_of, stamp

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), ROOT / "workflow/profiles/README.md"]


def test_generated_pages_regenerate_byte_for_byte_from_the_committed_summaries():
    for study in docs.STUDIES:
        assert (ROOT / docs.SUMMARIES / f"{study}.json").is_file(), f"{study}'s summary is not committed"
    rendered = docs.render(ROOT)
    assert {f"docs/results/{s}.md" for s in docs.STUDIES} <= {str(p) for p in rendered}
    stale = docs.stale(ROOT)
    assert not stale, f"generated files differ from their sources; run `traindyn report --no-collect`: {stale}"


def test_stale_pages_are_found(tmp_path):
    import shutil

    for rel in ("README.md", "docs", "workflow/report"):
        src, dst = ROOT / rel, tmp_path / rel
        shutil.copytree(src, dst) if src.is_dir() else shutil.copyfile(src, dst)
    assert docs.stale(tmp_path) == []
    page = tmp_path / "docs/results/scaling.md"
    page.write_text(page.read_text().replace("±", "+-", 1))
    assert docs.stale(tmp_path) == [page.relative_to(tmp_path)]
    assert docs.write(tmp_path) == [page.relative_to(tmp_path)] and docs.stale(tmp_path) == []


def test_readme_is_a_front_door():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    outside = re.sub(r"<!-- generated:(\w+) -->.*?<!-- /generated:\1 -->", "", text, flags=re.S)
    assert not re.findall(r"\b[0-9a-f]{7,40}\b", outside), "commit hashes belong in generated stamps only"
    for arxiv in ("2402.17457", "2405.07527", "2312.13247", "2406.02469"):
        assert f"arXiv:{arxiv}" in text
    assert "make test" in text and "make figures" in text


def test_no_tracked_file_points_outside_the_repository():
    out = subprocess.run(["git", "grep", "-l", r"\.\./shared", "--", ".", ":!tests", ":!.ci"], cwd=ROOT,
                         capture_output=True, text=True)  # fmt: skip
    assert out.stdout == "", f"these files point to a path a clone does not have: {out.stdout}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
        if "://" in target:
            continue
        assert (page.parent / target).exists(), f"{page.relative_to(ROOT)} links to missing {target}"


def _rst_messages(text: str) -> str:
    import docutils.core

    stream = io.StringIO()
    docutils.core.publish_string(text, writer="html",
                                 settings_overrides={"warning_stream": stream, "report_level": 2})  # fmt: skip
    return stream.getvalue()


@pytest.mark.parametrize("caption", sorted((ROOT / "workflow/report").glob("*.rst")), ids=lambda p: p.name)
def test_captions_are_clean_restructuredtext(caption):
    assert _rst_messages(caption.read_text()) == ""
    intro, figures = docs.parse_captions(caption.read_text())
    assert intro and figures, f"{caption.name}: an intro paragraph, then ``figure`` entries"


def test_the_caption_check_catches_a_stray_substitution():
    assert "Undefined substitution" in _rst_messages("sorted |Pearson correlation| of parameters")


def test_figures_page_lists_every_captioned_figure():
    page = (ROOT / "docs/figures.md").read_text()
    names = docs.documented_figures(ROOT)
    assert len(names) >= 30
    for name in names:
        assert f"### `{name}`" in page


def test_generated_regions_must_be_unique():
    with pytest.raises(ValueError, match="exactly one"):
        docs.fill("no region here", "headlines", "x", "README.md")
    assert docs.fill("a <!-- generated:x -->\nold\n<!-- /generated:x --> b", "x", "new\n", "f") == \
        "a <!-- generated:x -->\nnew\n<!-- /generated:x --> b"


def test_number_formatting():
    assert ci({"mean": 0.1149, "ci95": 0.371}, sign=True) == "+0.11 ± 0.37"
    assert ci({"mean": 2.0, "ci95": None}) == "2.00" and ci(None) == "n/a" and ci({"mean": None}) == "n/a"
    assert fmt(0.0312) == "0.0312" and fmt(305.2) == "305" and fmt(float("nan")) == "n/a"
    assert sign_of({"mean": 1.0, "ci95": 0.5}) == 1 and sign_of({"mean": -1.0, "ci95": 0.5}) == -1
    assert sign_of({"mean": 0.1, "ci95": 0.5}) == 0 and sign_of({"mean": 0.1, "ci95": None}) is None
    text = stamp({"commit": "0123456789abcdef0123", "date": "2026-01-01 00:00 UTC", "cpu": "C", "cpus": 2,
                  "machine": "x86_64", "python": "3.11"}, "`s.json`")  # fmt: skip
    assert "commit 0123456789ab " in text and "2026-01-01" in text and "(C)" in text


def test_mat_findings_follow_the_signs():
    from traindyn.report import mat

    def model(saved):
        e = {"mean": 1.0, "ci95": 0.1, "n": 3}
        return {"target_val_loss": 2.4, "seeds": {"full": 3, "mat": 3}, "reached_target": {"full": 3, "mat": 3},
                "flops_to_target": {"full": {"mean": 4e11, "ci95": 1e10}, "mat": {"mean": 3e11, "ci95": 1e10}},
                "flops_saved_pct_vs_full": {"mat": saved}, "wall_saved_pct_vs_full": {"mat": saved},
                "final_val_loss": {"full": e, "mat": e}, "final_test_loss": {"full": e, "mat": e},
                "active_fraction": {"full": e, "mat": e}, "total_flops": {"full": e, "mat": e},
                "final_val_loss_mat_minus_random": {"mean": 0.04, "ci95": 0.1}}  # fmt: skip

    saving = {"by_model": {"gpt": model({"mean": 40.0, "ci95": 5.0})}, "lambda_max_cv_across_heads": {}}
    none = {"by_model": {"gpt": model({"mean": -12.8, "ci95": 58.8})}, "lambda_max_cv_across_heads": {}}
    assert "+40.0 ± 5.0%, a saving" in mat.markdown(saving)
    assert "does not reproduce" not in mat.markdown(saving)
    assert "no significant saving" in mat.markdown(none) and "does not reproduce" in mat.headline(none)


def test_lag_findings_say_whether_the_study_has_power():
    from traindyn.report import lag

    rho = {"0": {"mean": 0.3, "ci95": 0.1, "n": 5}, "80": {"mean": 0.85, "ci95": 0.05, "n": 5}}
    summary = {"T": 200, "spearman_by_lag": rho, "lag_at_threshold": {"sp": {"threshold": 0.8, "lag": 80}},
               "strategy_spread_over_seed_sd": {"sp": {"spread": 0.0036, "seed_sd": 0.024, "ratio": 0.15,
                                                       "ratio_paired": 1.9, "best": "copy_top", "best_gap": 0.001}},
               "post_growth_best_lr_factor": {"sp": 3.0}, "post_growth_lr_factors": {"sp": [0.33, 1.0, 3.0]}}  # fmt: skip
    text = lag.markdown(summary)
    assert "first reaches 0.8 at k = 80 (40% of T = 200)" in text and "rho(0) is below" in text
    assert "each seed's ranking, the one the correlations score, holds" in text and "**at the edge**" in text
    assert "mostly noise" not in text
    cell = lag.headline(summary)
    assert "0.15 (paired by seed 1.9): below 1" in cell and "within a seed their order holds" in cell
    # the paired ratio's band decides when there is one
    summary["strategy_spread_over_seed_sd"]["sp"].update(ratio_paired_boot_lo=0.9, ratio_paired_boot_hi=3.0)
    assert "within a seed" not in lag.headline(summary) and "mostly noise at this scale" in lag.markdown(summary)
    summary["strategy_spread_over_seed_sd"]["sp"].update(ratio_paired=0.8, ratio_paired_boot_lo=None)
    assert "within a seed" not in lag.headline(summary) and "mostly noise at this scale" in lag.markdown(summary)
    summary["strategy_spread_over_seed_sd"]["sp"]["ratio"] = 1.4
    summary["post_growth_best_lr_factor"]["sp"] = 1.0
    text = lag.markdown(summary)
    assert "differ by more than seed noise" in text and "interior to the grid" in text
