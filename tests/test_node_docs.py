"""The node help pages and the Chinese locale: true to the nodes, and shown by each host's frontend.

The pages (web/js/docs/), their pictures and locales/zh/ are what scripts/make_node_docs.py
writes from the nodes' own schemas, so a page lists exactly the inputs and defaults a node
has. In each host's real frontend (headless Chromium), the node-info panel of every FreeSwim
node shows its page, and with the frontend's locale set to Chinese it shows the Chinese page
and the Chinese widget labels.
"""
import json
import time

import pytest

from harness.comfy_server import host_server, prepare_base
from harness.frontend import Frontend, chromium_path
from harness.graphs import TEST_NODES, TEST_NODES_NAME
from harness.inprocess import REPO
from scripts.node_docs_text import DISPLAY_ZH, INPUTS, NODES, PAGES


def test_pages_and_locale_are_what_the_script_writes(comfy, tmp_path):
    """Every input of every node has a row in both pages and a Chinese name, and the committed
    pages, pictures and locale files are the script's output for this host's nodes."""
    from PIL import Image, ImageChops

    from scripts.make_node_docs import schemas, write
    for name, schema in schemas().items():
        ids = [i.id for i in schema.inputs]
        assert sorted(ids) == sorted(INPUTS[name]), name          # no input without words, no words without input
        en = (REPO / "web/js/docs" / f"{name}.md").read_text(encoding="utf-8")
        zh = (REPO / "web/js/docs" / name / "zh.md").read_text(encoding="utf-8")
        for i in ids:
            assert f"| `{i}` |" in en and f"(`{i}`) |" in zh, (name, i)
    for path in write(tmp_path):
        rel = path.relative_to(tmp_path)
        committed = REPO / rel
        assert committed.exists(), f"{rel} is not committed: run python -m scripts.make_node_docs"
        if path.suffix == ".png":
            a, b = Image.open(path).convert("RGB"), Image.open(committed).convert("RGB")
            assert a.size == b.size and ImageChops.difference(a, b).getbbox() is None, rel
        else:
            assert path.read_text(encoding="utf-8") == committed.read_text(encoding="utf-8"), \
                f"{rel} is stale: run python -m scripts.make_node_docs"


@pytest.fixture(scope="module")
def frontend(tmp_path_factory, comfy_host):
    assert chromium_path(), "Chromium is missing: `make setup` installs Debian's chromium package"
    base = prepare_base(tmp_path_factory.mktemp("docs_base"), {TEST_NODES_NAME: TEST_NODES})
    with host_server(comfy_host, base) as server:
        with Frontend(server.url) as fe:
            yield fe


def _fresh_node(fe, node_type):
    """An empty graph with one ``node_type`` node, selected (any dialog the frontend opened on its
    own, as the templates browser for an empty workflow, closed first)."""
    t = json.dumps(node_type)
    fe.evaluate("(() => { document.dispatchEvent(new KeyboardEvent('keydown', {key: 'Escape', bubbles: true})); "
                "for (const b of document.querySelectorAll('.p-dialog-close-button')) b.click(); return true; })()")
    fe.evaluate(f"""(() => {{ const app = window.app; app.graph.clear();
        const n = LiteGraph.createNode({t}); if (!n) return false; n.pos = [320, 160]; app.graph.add(n);
        app.canvas.deselectAll(); app.canvas.selectNode(n); app.canvas.setDirty(true, true); return true; }})()""")


def _help_text(fe, node_type, expected: str, attempts=6):
    """A graph with one selected ``node_type`` node, and its node-info panel opened as a user
    would: the side panel's Info tab where that panel is open (newer frontends), else the selection
    toolbox's info button (the node library's help in older frontends, the side panel in newer
    ones). Returns the rendered page once it holds ``expected``. Tried again from a fresh graph
    when the frontend was busy (restoring a workflow after a reload) or the click toggled the
    panel closed."""
    want = json.dumps(expected)
    for _ in range(attempts):
        _fresh_node(fe, node_type)
        clicked = fe.evaluate("(() => { const b = document.querySelector('[data-testid=\"panel-tab-info\"]') "
                              "|| document.querySelector('[data-testid=\"info-button\"]'); "
                              "if (!b) return null; b.click(); return true; })()", wait_for_truthy=10)
        if not clicked:
            continue
        text = fe.evaluate(f"(() => {{ const e = document.querySelector('.node-help-content .markdown-content'); "
                           f"return e && e.innerText.includes({want}) ? e.innerText : null; }})()",
                           wait_for_truthy=10)
        if text:
            return text
    raise AssertionError(f"the node-info panel of {node_type} never showed {expected!r}")


def _switch_to_chinese(fe):
    """Set the frontend's locale (a user setting, kept by the server) and open the page again, as a
    user who chose Chinese would: the frontend starts in Chinese, with the nodes' definitions in it
    (a new node is titled with its Chinese display name)."""
    fe.evaluate("(async () => { await window.app.extensionManager.setting.set('Comfy.Locale', 'zh'); "
                "return true; })()")
    fe.reload()
    t, title = json.dumps(NODES[0]), json.dumps(DISPLAY_ZH[NODES[0]])
    deadline = time.time() + 60
    while time.time() < deadline:
        try:                                  # the app may still be registering its nodes
            _fresh_node(fe, NODES[0])
            if fe.evaluate(f"(() => window.app.graph._nodes.some(n => n.type === {t} && n.title === {title}))()"):
                return
        except RuntimeError:
            pass
        time.sleep(1)
    raise AssertionError("the frontend did not start in Chinese")


def test_node_info_panel_shows_each_page_in_english_and_chinese(frontend, tmp_path):
    fe = frontend
    fe.evaluate("(async () => { await window.app.extensionManager.setting.set('Comfy.Locale', 'en'); "
                "return true; })()")
    for node_type in NODES:
        text = _help_text(fe, node_type, PAGES[node_type]["en"]["what"][:40])
        assert "when to change it" in text.lower()
        if node_type == "FreeSwimWindowAttentionPatch":
            fe.evaluate("(() => { for (const b of document.querySelectorAll('.p-toast-close-button')) b.click(); "
                        "return true; })()")
            time.sleep(0.5)
            fe.screenshot(tmp_path / "node_help.png")
    _switch_to_chinese(fe)
    try:
        for node_type in NODES:
            text = _help_text(fe, node_type, PAGES[node_type]["zh"]["what"][:20])
            assert "何时修改" in text
            labels = fe.evaluate(
                f"(() => {{ const n = window.app.graph._nodes.find(n => n.type === {json.dumps(node_type)}); "
                f"return n ? Object.fromEntries((n.widgets || []).map(w => [w.name, w.label || null])) : null; }})()",
                wait_for_truthy=10)
            for name, label in labels.items():
                if name in INPUTS[node_type]:
                    assert label == INPUTS[node_type][name][0], (node_type, name, label)
    finally:
        fe.evaluate("(async () => { await window.app.extensionManager.setting.set('Comfy.Locale', 'en'); "
                    "return true; })()")
