"""The vector sets' admin in a real browser (Debian's chromium, a live daphne server), at the
widths staff use: the list's buttons clear its description and every row's links are on screen,
a running job's progress moves without a reload, a set's page offers Evaluate and GGUF and shows
its range and layers as a table and ranges, and ρ reads the same, explained, everywhere."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from steering.models import Evaluation, VectorSet
from tests.browser import BROWSER_MARKS
from tests.browser.live import BrowserTestCase, box, make_vectors, overlaps

pytestmark = BROWSER_MARKS


def in_thread(function):
    """Run an ORM call beside Playwright's event loop (Django refuses it in the loop's thread)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(function).result()


class VectorSetAdminTest(BrowserTestCase):
    def setUp(self):
        super().setUp()
        from steering.services import vector_sets

        self.long_named = vector_sets.vector_set_register(
            vectors=make_vectors(list(self.dimensions), seed=3), name="a shared set with a rather long descriptive name"
        )
        self.running = VectorSet.objects.create(
            name="computing", model_id=self.vector_set.model_id, status=VectorSet.Status.RUNNING, progress=10
        )
        self.evaluation = Evaluation.objects.create(
            vector_set=self.vector_set, dimension="cost", strengths=[-1, 0, 1], status=Evaluation.Status.READY,
            progress=100, report={
                "spearman": 0.527046, "spearman_of_means": 1.0, "functional_range": 0.02, "layers": [7, 8, 9, 12],
                "points": [
                    {"strength": s, "effect": e, "perplexity": 9.5, "ppl_ratio": 1.0, "pne": 0.1, "repetition": 0.0,
                     "answers": ["…"]}
                    for s, e in ((-1, -0.1), (0, 0.0), (1, 0.1))
                ],
                "baselines": {},
            },
        )

    def test_the_list_the_live_progress_and_a_set_s_page(self):
        erin = self.user("erin", is_staff=True, is_superuser=True)
        with self.browser() as (new_page, problems):
            for width in (1366, 1600):
                page = new_page(erin, width=width, height=900)
                page.goto(self.live_server_url + "/admin/steering/vectorset/")
                help_box = box(page, ".changelist-help")
                for tool in page.locator(".object-tools a").all():
                    assert not overlaps(tool.bounding_box(), help_box), (width, tool.text_content())
                for link in page.locator("#result_list td.field-file_actions a").all():
                    found = link.bounding_box()
                    assert found["x"] >= 0 and found["x"] + found["width"] <= width, (width, link.text_content(), found)
                assert page.locator("#result_list td.field-file_actions a").count() == 8  # two ready sets
                page.close()

            # The running job's bar moves on its own.
            page = new_page(erin, width=1366, height=900)
            page.goto(self.live_server_url + "/admin/steering/vectorset/")
            bar = page.locator(f'.job-progress[data-url$="/{self.running.pk}/progress/"]')
            assert bar.locator(".job-progress-text").text_content() == "10 %"
            in_thread(lambda: VectorSet.objects.filter(pk=self.running.pk).update(progress=55))
            page.wait_for_function(
                f"() => document.querySelector('.job-progress[data-url$=\"/{self.running.pk}/progress/\"] progress').value === 55"
            )
            assert bar.locator(".job-progress-text").text_content() == "55 %"
            in_thread(lambda: VectorSet.objects.filter(pk=self.running.pk).update(progress=100, status="ready"))
            page.wait_for_function(
                f"() => document.querySelector('.job-progress[data-url$=\"/{self.running.pk}/progress/\"]').dataset.status === 'ready'",
            )

            # A set's page: its actions, its range as a table, its layers as ranges.
            page.goto(f"{self.live_server_url}/admin/steering/vectorset/{self.vector_set.pk}/change/")
            tools = page.locator(".object-tools").text_content()
            for action in ("Evaluate", "GGUF", "Preview", "Download file"):
                assert action in tools
            rows = page.locator(".vs-range tbody tr")
            assert rows.count() == 2
            assert rows.first.locator("td").all_text_contents() == ["cost", "Budget", "Luxury", "±0.02", "no"]
            assert page.locator(".vs-layers").text_content() == "15 of 30: 7–21"

            # ρ: three decimals in the list and on the page, and what it is computed over.
            page.goto(self.live_server_url + "/admin/steering/evaluation/")
            assert page.locator("#result_list td.field-spearman").text_content() == "0.527 · 1.000"
            page.goto(f"{self.live_server_url}/admin/steering/evaluation/{self.evaluation.pk}/change/")
            text = page.locator(".field-summary_table").text_content()
            assert "steering: 0.527 (means: 1.000)" in text and "computed over every answer" in text
            assert "layers 7–9, 12" in text
        assert problems == []

    def test_a_set_s_page_plots_each_dimension_with_its_functional_range_marked(self):
        erin = self.user("erin", is_staff=True, is_superuser=True)
        with self.browser() as (new_page, problems):
            page = new_page(erin, width=1366, height=900)
            page.goto(f"{self.live_server_url}/admin/steering/vectorset/{self.vector_set.pk}/change/")
            figures = page.locator(".field-plots figure.vs-figure")
            assert figures.evaluate_all("fs => fs.map(f => f.dataset.dimension)") == ["cost", "formality"]
            page.wait_for_function(
                "() => [...document.querySelectorAll('.field-plots img.vs-plot-svg')].every(i => i.complete && i.naturalWidth > 0)"
            )
            for figure in figures.all():
                image = figure.locator("img")
                assert image.bounding_box()["width"] >= 600  # readable, not a thumbnail
                svg = page.evaluate("async (src) => (await fetch(src)).text()", image.get_attribute("src"))
                assert 'id="functional-range-effect"' in svg and 'id="functional-range-quality"' in svg
                assert "range ±0.02" in svg
            assert figures.first.locator("figcaption a").text_content() == f"evaluation {self.evaluation.pk}"
            assert "No evaluation of this dimension yet." in figures.last.text_content()
        assert problems == []
