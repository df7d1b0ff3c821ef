"""The explorer page in a real browser (Playwright driving the system Chromium) at a phone's width of
390 px: every page shows what it should (amounts with the asset's decimals, names, links between
objects, a live chart), nothing scrolls sideways, and the browser console stays free of errors.

The ledger objects come from running docs/sdk.md against an in-process node (`docs_story`). Skips, saying why, only when
no browser can be had (no `playwright` package or no Chromium binary)."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.unit.conftest import Story

CHROMIUM = os.environ.get("SMELEDGER_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WIDTH = 390


def money(n: int, decimals: int = 2) -> str:
    whole, frac = divmod(n, 10**decimals)
    return f"{whole:,}.{frac:0{decimals}d}"


@pytest.fixture
async def browser() -> Any:
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.skip("no browser: the python package `playwright` is not installed (make venv installs it)")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no browser: no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)")
    async with async_playwright() as pw:
        # headless, and a new empty profile, are Playwright's own defaults
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield b
        finally:
            await b.close()


async def test_every_explorer_page_reads_well_at_390_px_without_console_errors(docs_story: Story,
                                                                                 browser: Any) -> None:
    ns = docs_story.ns
    c, smea, smeb = ns["c"], ns["smea"], ns["smeb"]
    balance = (await asyncio.to_thread(c.account, smea.account)).balances["CNY.BANKA"]

    page = await browser.new_page(viewport={"width": WIDTH, "height": 844})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
    page.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
    base = docs_story.url

    async def visit(fragment: str, *expected: str) -> str:
        await page.goto(f"{base}/#/{fragment}")
        for text in expected:
            await page.get_by_text(text, exact=False).first.wait_for(timeout=10_000)
        body: str = await page.text_content("body") or ""
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= WIDTH, f"#/{fragment} scrolls sideways: {width} px wide at {WIDTH} px"
        return body

    home = await visit("", "Recent blocks", "committed tx/s")
    assert "block time" in home and await page.locator("#chart svg polyline").count() == 2
    assert await page.locator("link[rel=icon]").count() == 1

    body = await visit(f"account/{smea.account}", "Balances", money(balance))
    assert "smea" in body and "SME" in body and "Recent events" in body

    loan = ns["loan"]
    body = await visit(f"loan/{loan.tx_hash}", "200,000.00")
    assert "repaid" in body and "bankb" in body and "smea" in body  # borrower and lender by name
    await page.get_by_role("link", name="the tx that created it").click()
    await page.get_by_text("loan_applied").first.wait_for()
    assert "committed" in (await page.text_content("body") or "")

    body = await visit(f"receivable/{ns['receivable'].tx_hash}", "1,000,000.00")
    assert "accepted" in body or "split" in body
    body = await visit(f"campaign/{ns['campaign'].tx_hash}", "Contributions (2)", "30,000.00", "funded")
    assert "investor1" in body and "investor2" in body
    body = await visit(f"collateral/{ns['inventory'].tx_hash}", "500,000.00", "inventory")
    body = await visit(f"fx-quote/{ns['quote'].tx_hash}", "price:", "7.2")
    assert "10,000.00" in body  # the quoted amount, in the base asset's decimals
    body = await visit("asset/CNY.BANKA", "deposit")

    receipt = ns["receivable"]
    body = await visit(f"tx/{receipt.tx_hash}", "receivable_issued", "created:")
    await page.get_by_role("link", name="created:").or_(page.locator("a", has_text="receivable ")).first.click()
    await page.get_by_text("1,000,000.00").first.wait_for()
    assert "#/receivable/" in page.url

    body = await visit(f"block/{receipt.height}", f"Block {receipt.height}", "Transactions")
    await page.locator("main a[href^='#/tx/']").first.click()
    await page.wait_for_url("**/#/tx/**")
    await page.locator("h2", has_text="Events").wait_for()

    await page.goto(f"{base}/#/")
    await page.fill("#q", "smeb")
    await page.press("#q", "Enter")
    await page.wait_for_url(f"**/#/account/{smeb.account}")
    await page.get_by_text("Balances").first.wait_for()

    assert not problems, "\n".join(problems)
