"""Screenshot of the FreeSwim panel for the README (docs/panel.png).

  python -m scripts.panel_screenshot [--workflow workflows/wan_14B_t2v_freeswim_4k.json] [--vram-gb 80]

Starts the newest built ComfyUI host with this pack, opens its real frontend in headless
Chromium, loads the workflow, sets the GPU size the plan is made for, and saves the canvas
around the FreeSwim nodes.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from harness.comfy_server import host_server, prepare_base
from harness.frontend import Frontend
from harness.hosts import newest
from harness.inprocess import REPO

CENTER = """(() => {
  const app = window.app;
  document.querySelectorAll('.p-dialog-close-button, .p-dialog-header-close').forEach(b => b.click());
  document.querySelectorAll('.p-toast, [class*="toast"], [role="alert"]').forEach(t => t.remove());
  [...document.querySelectorAll('div')].filter(d => /errors? found/.test(d.textContent || '') &&
    d.children.length < 8 && d.getBoundingClientRect().width < 500).forEach(d => d.remove());
  const nodes = app.graph._nodes.filter(n => String(n.type).startsWith('FreeSwim'));
  const xs = nodes.map(n => n.pos[0]), ys = nodes.map(n => n.pos[1]);
  const x0 = Math.min(...xs) - 110, y0 = Math.min(...ys) - 70;
  const ds = app.canvas.ds;
  ds.scale = %s;
  ds.offset[0] = -x0; ds.offset[1] = -y0;
  app.canvas.setDirty(true, true);
  return true;
})()"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workflow", type=Path, default=REPO / "workflows" / "wan_14B_t2v_freeswim_4k.json")
    ap.add_argument("--vram-gb", type=float, default=80)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "panel.png")
    a = ap.parse_args()
    base = prepare_base(REPO / ".cache" / "panel_base")
    workflow = json.loads(a.workflow.read_text())
    with host_server(newest(), base) as server, Frontend(server.url) as fe:
        fe.evaluate("(async () => { const s = window.app.extensionManager?.setting; "
                    "if (s?.set) { await s.set('Comfy.TutorialCompleted', true); "
                    f"await s.set('FreeSwim.VRAMGB', {a.vram_gb}); }} "
                    f"else window.app.ui.settings.setSettingValue('FreeSwim.VRAMGB', {a.vram_gb}); return true; }})()")
        fe.evaluate(f"(async () => {{ await window.app.loadGraphData({json.dumps(workflow)}); return true; }})()")
        fe.evaluate("(() => { const n = window.app.graph._nodes.find(n => n.type === 'FreeSwimLatentUpscaleRefine');"
                    " return n && n.freeswimPanel && n.freeswimPanel.plan && n.freeswimPanel.request.vram_gb; })()",
                    wait_for_truthy=60)
        time.sleep(1)
        fe.evaluate(CENTER % a.scale)
        time.sleep(2)
        fe.evaluate(CENTER % a.scale)
        time.sleep(1)
        fe.screenshot(a.out)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
