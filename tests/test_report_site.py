"""Building the static site: content, self-containment, escaping, empty stores, atomic replacement."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from metalora.errors import MlbenchError
from reports import site
from reports.site import build_report
from tests.report_fixtures import hostile_store, rid, standard_store


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("site")
    return build_report(standard_store(root / "store"), root / "site")


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href") and value is not None:
                self.refs.append((tag, value))


def links(page: Path) -> list[tuple[str, str]]:
    parser = Links()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser.refs


def test_index_has_leaderboard_reference_rows_and_runs(built):
    html = built.read_text(encoding="utf-8")
    assert 'id="leaderboard-table"' in html
    assert "62.50 ± 31.05 (n=3)" in html and "37.50 (n=1, CI n/a)" in html
    assert "Reported in papers" in html and "39.53" in html
    assert "not comparable to the paper" in html  # the smoke run
    assert "status-interrupted" in html and rid(80) in html  # the unfinished run, listed only
    assert "t(0.975, n−1)" in html  # the interval's formula is stated


def test_every_link_is_local_and_exists(built):
    root = built.parent
    pages = [built, *sorted((root / "runs").glob("*.html"))]
    images = 0
    for page in pages:
        for tag, ref in links(page):
            assert not re.match(r"^[a-z]+:", ref), f"{page.name} links outside the site: {ref}"
            target = (page.parent / ref.split("#")[0]).resolve()
            assert target.exists(), f"{page.name}: {ref} is missing"
            images += tag == "img"
    assert images >= 5  # MMLU has one budget only: said in words, not drawn as a dot
    assert (root / "tables" / "leaderboard.csv").is_file() and (root / "tables" / "paired.tex").is_file()


def test_run_page_shows_config_hashes_environment_metrics_and_samples(built):
    page = (built.parent / "runs" / f"{rid(20)}.html").read_text(encoding="utf-8")
    for text in (
        "method_options.inner_steps",
        "bbh/boolean_expressions.json",
        "ab" * 32,
        "deadbeef",
        "boolean_expressions",
        "Training loss",
        f"{rid(20)}_bbh.html",
    ):
        assert text in page
    # losses 2.0, 1.4, 1.0 at steps 1-3 in a 320 x 80 box with 2 px padding
    assert '<polyline points="2.0,2.0 160.0,47.6 318.0,78.0"/>' in page
    assert not list((built.parent / "plots").glob("loss_*"))  # no matplotlib figure per run
    samples = (built.parent / "runs" / f"{rid(20)}_bbh.html").read_text(encoding="utf-8")
    records = json.loads(samples.split('<script type="application/json" id="records-data">')[1].split("</script>")[0])
    assert [r[2] for r in records].count(False) == 3 and len(records) == 8 and 'id="wrong-only"' in samples


def test_markup_in_store_text_is_escaped(tmp_path):
    index = build_report(hostile_store(tmp_path / "store"), tmp_path / "site")
    pages = [index, *sorted((index.parent / "runs").glob("*.html"))]
    escaped = "&lt;script&gt;document.title=&#34;pwned&#34;;window.pwned=1&lt;/script&gt;&lt;img src=x onerror=&#34;window.pwned=1&#34;&gt;&#39;&#34; x=$x^$"
    seen = 0
    for page in pages:
        html = page.read_text(encoding="utf-8")
        assert "<script>document.title" not in html and "<img src=x" not in html
        assert html.count("<script>") == 1  # the report's own script, nothing else
        seen += html.count(escaped)
    assert seen >= 5  # model name, task name, sample prompt and output, filter option


def test_empty_store_says_there_are_no_runs(tmp_path):
    (tmp_path / "store").mkdir()
    html = build_report(tmp_path / "store", tmp_path / "site").read_text(encoding="utf-8")
    assert "There are no runs yet" in html
    assert "Reported in papers" in html  # the reference rows still orient the reader


def test_missing_store_is_a_user_error(tmp_path):
    with pytest.raises(MlbenchError, match="does not exist"):
        build_report(tmp_path / "nowhere", tmp_path / "site")


def test_refuses_to_replace_a_folder_that_is_not_a_report(tmp_path):
    (tmp_path / "store").mkdir()
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "thesis.tex").write_text("precious")
    with pytest.raises(MlbenchError, match="not an mlbench report"):
        build_report(tmp_path / "store", tmp_path / "docs")
    assert (tmp_path / "docs" / "thesis.tex").read_text() == "precious"


def test_rebuild_replaces_and_failed_build_leaves_previous_site(tmp_path, monkeypatch):
    store = standard_store(tmp_path / "store")
    index = build_report(store, tmp_path / "site")
    index = build_report(store, tmp_path / "site")
    before = index.read_text(encoding="utf-8")

    def broken(self):
        (self.root / "index.html").write_text("half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(site.Site, "write", broken)
    with pytest.raises(RuntimeError):
        build_report(store, tmp_path / "site")
    assert index.read_text(encoding="utf-8") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site", "store"]  # no temp folder left


def test_unreadable_run_folder_is_listed_not_fatal(tmp_path):
    store = standard_store(tmp_path / "store")
    (store / rid(10) / "eval" / "samples" / "bbh.jsonl.gz").write_bytes(b"\x1f\x8b cut short")
    (store / rid(999)).mkdir()
    (store / rid(999) / "config.json").write_text("{ not json")
    html = build_report(store, tmp_path / "site").read_text(encoding="utf-8")
    assert "Folders that could not be read" in html and rid(999) in html


def test_a_rebuild_reuses_the_pages_of_unchanged_runs_and_renders_changed_ones(tmp_path, monkeypatch):
    store = standard_store(tmp_path / "store")
    index = build_report(store, tmp_path / "site")
    pages = index.parent / "runs"
    first = {p.name: (p.stat().st_ino, p.read_bytes()) for p in pages.iterdir()}
    samples = [name for name in first if name.startswith(f"{rid(1)}_")]
    assert samples and f"{rid(1)}.html" in first
    # run 1's results change (one more byte): its pages are rendered again, every other page is reused
    results = store / rid(1) / "eval" / "results.json"
    results.write_text(results.read_text() + " ")
    rendered = []
    real = site.Site.render_run_pages
    monkeypatch.setattr(site.Site, "render_run_pages", lambda self, run: rendered.append(run.run_id) or real(self, run))
    build_report(store, index.parent)
    assert rendered == [rid(1)]
    second = {p.name: (p.stat().st_ino, p.read_bytes()) for p in pages.iterdir()}
    assert second.keys() == first.keys()
    for name, (inode, content) in second.items():
        if name.startswith(rid(1)):
            assert inode != first[name][0]
        else:
            assert (inode, content) == first[name]  # the same file, linked into the new site
    html = index.read_text(encoding="utf-8")
    assert html.count(f'href="runs/{rid(1)}.html"') >= 1
    # a new file in a run (here a failure record): rendered again; a damaged pages file: all again
    (store / rid(10) / "FAILED").write_text('{"error": "disk full"}')
    rendered.clear()
    build_report(store, index.parent)
    assert rendered == [rid(10)]
    (index.parent / site.PAGES_FILE).write_text("{broken")
    rendered.clear()
    build_report(store, index.parent)
    assert len(rendered) == len({name.split("_")[0].removesuffix(".html") for name in first})


def _tree(folder: Path) -> dict[str, bytes]:
    stamp = re.compile(rb"Generated [^<]* by")
    return {str(p.relative_to(folder)): stamp.sub(b"", p.read_bytes()) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_pages_and_figures_rendered_by_other_processes_equal_those_of_one(tmp_path, monkeypatch):
    store = standard_store(tmp_path / "store")
    serial = build_report(store, tmp_path / "serial").parent
    monkeypatch.setattr(site, "RUNS_PER_WORKER", 1)
    monkeypatch.setattr(site, "usable_cpus", lambda: 3)
    forked, jobs = [], []
    real, real_jobs = site.render_forked, site.fork_jobs
    monkeypatch.setattr(site, "render_forked", lambda *args: forked.append(args[2]) or real(*args))
    monkeypatch.setattr(site, "fork_jobs", lambda *args: jobs.append((args[0].name, len(args[1]))) or real_jobs(*args))
    parallel = build_report(store, tmp_path / "parallel").parent
    assert forked == [3] and jobs == [(".render", 3), (".figures", 1)]
    expected, got = _tree(serial), _tree(parallel)
    assert got.keys() == expected.keys() and ".render" not in "".join(got) and ".figures" not in "".join(got)
    pages = site.PAGES_FILE
    assert [name for name in expected if got[name] != expected[name]] == []
    # the figures' entries (files, titles) came back from the drawing process: a rebuild reuses them
    plotted = {p: json.loads(tree[pages])[site.PLOTS_KEY] for p, tree in (("serial", expected), ("parallel", got))}
    assert plotted["parallel"] == plotted["serial"] and plotted["serial"]["loss"]["files"] == ["plots/training_loss.svg"]
    jobs.clear()
    build_report(store, tmp_path / "parallel")  # nothing changed: no page to render, no figure to draw
    assert jobs == []


def test_a_disk_error_in_a_render_process_is_one_line_and_keeps_the_previous_site(tmp_path, monkeypatch):
    import errno

    store = standard_store(tmp_path / "store")
    index = build_report(store, tmp_path / "site")
    before = _tree(index.parent)
    (store / rid(1) / "DONE").touch()  # something to render again

    def full(self, run):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(site, "RUNS_PER_WORKER", 1)
    monkeypatch.setattr(site, "usable_cpus", lambda: 2)
    monkeypatch.setattr(site.Site, "render_run_pages", full)
    monkeypatch.setattr(site.Site, "reuse", lambda self, run_id, key: None)
    with pytest.raises(MlbenchError, match=r"No space left on device\); choose a writable --out"):
        build_report(store, index.parent)
    assert _tree(index.parent) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site", "store"]


def test_a_disk_error_in_the_figure_process_is_one_line_and_keeps_the_previous_site(tmp_path, monkeypatch):
    import errno

    from reports import plots

    store = standard_store(tmp_path / "store")
    index = build_report(store, tmp_path / "site")
    before = _tree(index.parent)
    (store / rid(1) / "DONE").touch()  # the figures are drawn again

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(site, "RUNS_PER_WORKER", 1)
    monkeypatch.setattr(site, "usable_cpus", lambda: 2)
    monkeypatch.setattr(plots, "loss_overview", full)
    jobs = []
    real_jobs = site.fork_jobs
    monkeypatch.setattr(site, "fork_jobs", lambda *args: jobs.append(args[0].name) or real_jobs(*args))
    with pytest.raises(MlbenchError, match=r"No space left on device\); choose a writable --out"):
        build_report(store, index.parent)
    assert ".figures" in jobs
    assert _tree(index.parent) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site", "store"]


def test_a_rebuild_without_changes_reuses_the_figures_and_a_changed_run_redraws_them(tmp_path, monkeypatch):
    from reports import plots

    store = standard_store(tmp_path / "store")
    index = build_report(store, tmp_path / "site")
    figures = {p.name: p.stat().st_ino for p in (index.parent / "plots").iterdir()}
    assert any(name.startswith("heatmap_") for name in figures) and "training_loss.svg" in figures
    html = index.read_text(encoding="utf-8")
    drawn = []
    for name in ("budget_curves", "task_heatmap", "ablation_plot", "loss_overview", "language_bars"):
        real = getattr(plots, name)
        monkeypatch.setattr(plots, name, lambda *args, _real=real, _name=name: drawn.append(_name) or _real(*args))
    build_report(store, index.parent)
    assert drawn == []
    assert {p.name: p.stat().st_ino for p in (index.parent / "plots").iterdir()} == figures
    again = index.read_text(encoding="utf-8")
    stamp = re.compile(r"Generated [^<]* by")
    assert stamp.sub("", again) == stamp.sub("", html)  # the same figures, titles and descriptions
    (store / rid(10) / "DONE").touch()
    build_report(store, index.parent)
    assert {"budget_curves", "task_heatmap", "loss_overview"} <= set(drawn)


def test_matplotlib_is_imported_only_to_draw(tmp_path):
    """Most of the report's start-up: a rebuild that reuses every figure, and the processes that
    render run pages, never import it; drawing a figure does."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from reports import plots, site\n"
        "from tests.report_fixtures import standard_store\n"
        "assert 'matplotlib' not in sys.modules\n"
        f"store = standard_store(Path({str(tmp_path / 'store')!r}))\n"
        "s = site.Site(site.load_store(store), Path({out!r}))\n"
        "s.render_run_pages(s.store.runs[0])\n"
        "assert 'matplotlib' not in sys.modules\n"
        "plots.loss_overview(site.group_settings(s.store.finished), Path({out!r}) / 'plots')\n"
        "print('matplotlib' in sys.modules)\n"
    ).replace("{out!r}", repr(str(tmp_path / "site")))
    repo = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", script], check=False, cwd=repo, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "True\n"
