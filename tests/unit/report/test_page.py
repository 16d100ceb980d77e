"""The HTML report: well-formed, self-contained, one bar per attempt, everything escaped."""

from __future__ import annotations

from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from stagecoach.report import load_run, render_html, write_report

from .sample import ATTEMPT_LABELS, EVENTS, EVIL

VOID = {"meta", "br", "hr", "img", "input", "link", "col", "area", "base", "source", "wbr"}


class Checker(HTMLParser):
    """Checks that tags nest and records what the document contains."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str, str | None]] = []
        self.rects_in_svg = 0
        self.svgs = 0
        self.ids: set[str] = set()
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._tag(tag, attrs)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._tag(tag, attrs)

    def _tag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += [(tag, k, v) for k, v in attrs]
        self.ids |= {v for k, v in attrs if k == "id" and v}
        if tag == "svg":
            self.svgs += 1
        if tag == "rect" and "svg" in self.stack:
            self.rects_in_svg += 1

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def check(html: str) -> Checker:
    checker = Checker()
    checker.feed(html)
    checker.close()
    assert checker.errors == []
    assert checker.stack == []
    return checker


def test_well_formed_with_one_rect_per_attempt(run_dir: Path) -> None:
    html = render_html(load_run(run_dir))
    assert html.startswith("<!DOCTYPE html>")
    doc = check(html)
    assert doc.svgs == 1
    assert doc.rects_in_svg == len(ATTEMPT_LABELS)
    assert doc.tags.count("details") >= len(ATTEMPT_LABELS)


def test_bars_link_to_attempt_details(run_dir: Path) -> None:
    doc = check(render_html(load_run(run_dir)))
    links = [v for tag, k, v in doc.attrs if tag == "a" and k == "href"]
    assert len(links) == len(ATTEMPT_LABELS)
    assert all(v and v.startswith("#") and v[1:] in doc.ids for v in links)


def test_self_contained(run_dir: Path) -> None:
    doc = check(render_html(load_run(run_dir)))
    assert not {"script", "link", "img", "iframe", "object"} & set(doc.tags)
    assert not [a for a in doc.attrs if a[1] in {"src", "srcset"} or a[1].startswith("on")]
    hrefs = [v for _, k, v in doc.attrs if k == "href"]
    assert all(v and v.startswith("#") for v in hrefs)
    assert "@import" not in render_html(load_run(run_dir))


def test_untrusted_content_is_escaped(run_dir: Path) -> None:
    html = render_html(load_run(run_dir))
    assert EVIL not in html
    assert "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    text = "".join(check(html).text)
    assert f"Report {EVIL} done" in text  # the final output, shown as text
    assert "Find sources <img src=x onerror=alert(2)>" in text  # the prompt snapshot


def test_sections_show_the_run(run_dir: Path) -> None:
    html = render_html(load_run(run_dir))
    text = " ".join(" ".join(check(html).text).split())
    assert "demo" in text and "Succeeded" in text
    assert "stages.verify.output.failed_ratio = 0.5" in text
    assert "MalformedOutput" in text and "the answer is not valid JSON" in text
    assert "HTTP 429" in text
    assert "total 9 360 143 503" in text
    assert "Assembled by the output template from qa (iteration 1) · 40 bytes" in text
    assert 'class="backoff"' in html
    assert 'class="loop"' in html and "↺ research it2" in text
    assert "skipped: when: stages.qa.output.score &gt;= 0.8" in html


def test_partial_runs_render(make_run: Callable[..., Path]) -> None:
    cases: list[dict[str, Any]] = [
        {"status": None, "events": EVENTS[:12], "final": None},
        {"status": None, "events": [], "final": None, "outputs": {}, "manifest": None},
    ]
    for kw in cases:
        html = render_html(load_run(make_run(**kw)))
        check(html)
        assert "No output was assembled" in html


def test_write_report(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "nested" / "report.html"
    write_report(run_dir, out)
    check(out.read_text(encoding="utf-8"))
    assert not list(out.parent.glob(".*.tmp"))
