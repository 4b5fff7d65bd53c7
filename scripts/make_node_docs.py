"""Write the node help pages (English and Chinese), their pictures and the Chinese locale.

ComfyUI's frontend shows a custom node's page in its node-info panel from
``WEB_DIRECTORY/docs/<NodeId>.md`` (``docs/<NodeId>/<locale>.md`` for another language),
and translates node names, input names and tooltips from ``locales/<lang>/nodeDefs.json``.
The pages are built from what each node declares (its inputs, defaults, tooltips), read
from the node classes in a real ComfyUI host, and the words in ``scripts/node_docs_text.py``;
the pictures are drawn from the method's own geometry (``freeswim_core``), so the pages stay
true: ``tests/test_node_docs.py`` checks the committed files are what this script writes.

  python -m scripts.make_node_docs            # writes web/js/docs/ and locales/zh/
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scripts.node_docs_text import (DESCRIPTION_ZH, DISPLAY_ZH, HEADINGS, INPUTS, MAIN_ZH, NODES,  # noqa: E402
                                    OUTPUT_TOOLTIP_ZH, PAGES, SETTINGS_ZH)

DOCS = Path("web/js/docs")
LOCALES = Path("locales")


def schemas() -> dict:
    """Each node's schema as the host builds it (display name, inputs with defaults and tooltips)."""
    import harness.inprocess as comfy
    comfy.comfy_ready()
    return {name: comfy.node_class(name).define_schema() for name in NODES}


def _default(i, h: dict) -> str:
    value = getattr(i, "default", None)
    if value is None:
        return h["optional"] if getattr(i, "optional", False) else h["required"]
    if isinstance(value, bool):
        return h["on"] if value else h["off"]
    return f"`{value}`"


def _cell(text: str) -> str:
    return (text or "").replace("|", "\\|").replace("\n", " ")


def page(name: str, schema, lang: str) -> str:
    h, words = HEADINGS[lang], PAGES[name][lang]
    title = schema.display_name if lang == "en" else DISPLAY_ZH[name]
    description = schema.description if lang == "en" else DESCRIPTION_ZH[name]
    lines = [f"# {title}", "", description, "", f"## {h['what']}", "", words["what"], "",
             f"## {h['where']}", "", words["where"], "", f"## {h['inputs']}", "",
             f"| {h['input']} | {h['default']} | {h['does']} | {h['when']} |", "|---|---|---|---|"]
    for i in schema.inputs:
        zh_name, zh_tip, when_en, when_zh = INPUTS[name][i.id]
        shown = f"`{i.id}`" if lang == "en" else f"{zh_name} (`{i.id}`)"
        does = (i.tooltip if lang == "en" else zh_tip) or h["none"]
        lines.append(f"| {shown} | {_default(i, h)} | {_cell(does)} | {_cell(when_en if lang == 'en' else when_zh)} |")
    lines += ["", f"## {h['panel']}", "", words["panel"], "", f"## {h['errors']}", "",
              f"| {h['message']} | {h['fix']} |", "|---|---|"]
    lines += [f"| {_cell(message)} | {_cell(fix)} |" for message, fix in words["errors"]]
    image, caption = words["picture"]
    lines += ["", f"## {h['picture']}", "", f"![{caption}](images/{image})", "", caption, ""]
    return "\n".join(lines)


def node_defs_zh(all_schemas: dict) -> dict:
    out = {}
    for name, schema in all_schemas.items():
        inputs = {}
        for i in schema.inputs:
            zh_name, zh_tip, _, _ = INPUTS[name][i.id]
            inputs[i.id] = {"name": zh_name, **({"tooltip": zh_tip} if zh_tip else {})}
        entry = {"display_name": DISPLAY_ZH[name], "description": DESCRIPTION_ZH[name], "inputs": inputs}
        if name in OUTPUT_TOOLTIP_ZH:
            entry["outputs"] = {"0": {"tooltip": OUTPUT_TOOLTIP_ZH[name]}}
        out[name] = entry
    return out


# --- pictures (PIL; colours: blue the window row, green the full branch, orange the border) -----

BLUE, GREEN, ORANGE, GREY, INK, PAPER = (66, 133, 244), (52, 168, 83), (251, 140, 0), (170, 170, 170), (60, 60, 60), \
    (255, 255, 255)


def window_picture():
    """One frame of 14 x 24 tokens and a 7 x 11 window: a token in the middle, one at the corner
    (shifted inward) and the truncated window the ablation would use, from the core's geometry."""
    from PIL import Image, ImageDraw

    from freeswim_core.geometry import axis_windows
    rows, cols, win = 14, 24, (7, 11)
    cell, pad = 22, 12
    img = Image.new("RGB", (cols * cell + 2 * pad, rows * cell + 2 * pad), PAPER)
    d = ImageDraw.Draw(img)

    def box(r0, r1, c0, c1, colour, width=3):
        d.rectangle([pad + c0 * cell, pad + r0 * cell, pad + (c1 + 1) * cell, pad + (r1 + 1) * cell],
                    outline=colour, width=width)

    for r in range(rows):
        for c in range(cols):
            box(r, r, c, c, (225, 225, 225), 1)
    (sh, eh), (sw, ew) = axis_windows(rows, win[0], True), axis_windows(cols, win[1], True)
    (th, teh), (tw, tew) = axis_windows(rows, win[0], False), axis_windows(cols, win[1], False)
    mid, corner = (6, 12), (1, 1)
    box(int(th[corner[0]]), int(teh[corner[0]]), int(tw[corner[1]]), int(tew[corner[1]]), GREY, 5)
    box(int(sh[mid[0]]), int(eh[mid[0]]), int(sw[mid[1]]), int(ew[mid[1]]), BLUE)
    box(int(sh[corner[0]]), int(eh[corner[0]]), int(sw[corner[1]]), int(ew[corner[1]]), ORANGE)
    for (r, c), colour in ((mid, BLUE), (corner, ORANGE)):
        d.rectangle([pad + c * cell + 4, pad + r * cell + 4, pad + (c + 1) * cell - 4, pad + (r + 1) * cell - 4],
                    fill=colour)
    return img


def dual_path_picture():
    """Two rows through three blocks: self-attention (window / full), cross-attention handed from
    the twin to the window row."""
    from PIL import Image, ImageDraw
    img = Image.new("RGB", (620, 200), PAPER)
    d = ImageDraw.Draw(img)
    for b in range(3):
        x = 30 + b * 200
        d.rectangle([x - 10, 20, x + 170, 180], outline=(210, 210, 210), width=2)          # a block
        for y, colour in ((40, BLUE), (120, GREEN)):
            d.rectangle([x, y, x + 70, y + 40], fill=colour)                               # self-attention
            d.rectangle([x + 90, y, x + 160, y + 40], outline=colour, width=4)             # cross-attention
        d.line([x + 125, 120, x + 125, 86], fill=INK, width=4)                             # the hand-over
        d.polygon([(x + 117, 90), (x + 133, 90), (x + 125, 80)], fill=INK)
    return img


def refine_picture():
    """Native clip, upscaled, and the schedule bar with the refine's tail (strength 0.7 of 50)."""
    from PIL import Image, ImageDraw

    from freeswim_core.settings import RefineOptions
    r = RefineOptions()
    img = Image.new("RGB", (620, 220), PAPER)
    d = ImageDraw.Draw(img)
    d.rectangle([20, 60, 20 + 83, 60 + 48], fill=GREY)                                     # 832 x 480
    d.line([115, 84, 175, 84], fill=INK, width=4)
    d.polygon([(175, 76), (175, 92), (187, 84)], fill=INK)
    d.rectangle([200, 30, 200 + 192, 30 + 109], fill=BLUE)                                 # 1920 x 1088
    steps, run = r.steps, round(r.steps * r.strength)
    x0, width = 20, 580
    for s in range(steps):
        x = x0 + s * width / steps
        colour = GREEN if s >= steps - run else (225, 225, 225)
        d.rectangle([x, 170, x + width / steps - 2, 195], fill=colour)
    return img


PICTURES = {"window.png": window_picture, "dual_path.png": dual_path_picture, "refine.png": refine_picture}


def write(out: Path) -> list[Path]:
    """Every generated file under ``out`` (the repository root by default); returns their paths."""
    all_schemas = schemas()
    written = []

    def put(rel: Path, text: str):
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)

    for name, schema in all_schemas.items():
        put(DOCS / f"{name}.md", page(name, schema, "en"))       # English, and every locale without a page
        put(DOCS / name / "zh.md", page(name, schema, "zh"))
    dump = lambda d: json.dumps(d, ensure_ascii=False, indent=2, sort_keys=True) + "\n"  # noqa: E731
    put(LOCALES / "zh" / "nodeDefs.json", dump(node_defs_zh(all_schemas)))
    put(LOCALES / "zh" / "main.json", dump(MAIN_ZH))
    put(LOCALES / "zh" / "settings.json", dump(SETTINGS_ZH))
    for file, draw in PICTURES.items():
        path = out / DOCS / "images" / file
        path.parent.mkdir(parents=True, exist_ok=True)
        draw().save(path, optimize=True)
        written.append(path)
    return written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO, help="root to write under (default: the repository)")
    for path in write(ap.parse_args().out):
        print(path)


if __name__ == "__main__":
    main()
