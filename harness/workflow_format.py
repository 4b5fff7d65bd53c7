"""ComfyUI workflow files: build the UI format the frontend loads, convert it to the API format.

The UI format stores each node's widget values as a positional list
(``widgets_values``) in the order of the node's widget inputs, with one extra
value after every widget that has ``control_after_generate`` (the frontend's
"randomize/fixed" switch). Connections are ``links`` entries
``[id, from_node, from_slot, to_node, to_slot, type]``. Both directions here
read that order from ComfyUI's ``object_info``, so they follow the node
definitions of the host they run against.
"""
from __future__ import annotations

from typing import Any

# A combo whose chosen option brings inputs of its own, named "<combo>.<input>" (V3 schema).
DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO", DYNAMIC_COMBO}
UI_ONLY_NODES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}


def _spec_inputs(info: dict) -> list[tuple[str, Any, dict]]:
    return _inputs_of(info.get("input", {}))


def _inputs_of(sections: dict) -> list[tuple[str, Any, dict]]:
    out = []
    for section in ("required", "optional"):
        for name, spec in (sections.get(section) or {}).items():
            kind = spec[0]
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            out.append((name, kind, opts))
    return out


def is_widget(kind, opts) -> bool:
    return (isinstance(kind, list) or kind in WIDGET_TYPES) and not opts.get("forceInput")


def widget_names(info: dict) -> list[tuple[str, bool]]:
    """(name, has control_after_generate) for each widget input, in order."""
    return [(n, bool(o.get("control_after_generate"))) for n, k, o in _spec_inputs(info) if is_widget(k, o)]


def widget_default(kind, opts: dict):
    """The value the frontend gives a widget nobody set: its default, else its first option."""
    if opts.get("default") is not None:
        return opts["default"]
    options = kind if isinstance(kind, list) else opts.get("options", [])
    if not options:
        return None
    return options[0]["key"] if isinstance(options[0], dict) else options[0]


def _fill_widgets(inputs: list[tuple[str, Any, dict]], values: list, i: int, prefix: str, out: dict) -> int:
    """Assign positional ``values`` (from index ``i``) to the widget inputs, in order; a widget
    with no saved value (the host added it after the file was saved) gets the value the frontend
    gives it, its default. A dynamic combo's chosen option's widgets follow it. Returns the next
    index."""
    for name, kind, opts in inputs:
        if not is_widget(kind, opts):
            continue
        key = prefix + name
        value = values[i] if i < len(values) else widget_default(kind, opts)
        if value is not None:
            out[key] = value
        i += 2 if opts.get("control_after_generate") else 1
        if kind == DYNAMIC_COMBO:
            chosen = next((o for o in opts.get("options", []) if o.get("key") == value), None)
            if chosen is not None:
                i = _fill_widgets(_inputs_of(chosen.get("inputs", {})), values, i, key + ".", out)
    return i


def ui_to_api(ui: dict, object_info: dict) -> dict:
    """API-format prompt from a UI-format workflow (UI-only nodes and bypassed nodes dropped)."""
    links = {link[0]: link for link in ui.get("links", [])}
    prompt = {}
    for node in ui["nodes"]:
        ntype = node["type"]
        if ntype in UI_ONLY_NODES or node.get("mode", 0) in (2, 4):
            continue
        if ntype not in object_info:
            raise KeyError(f"workflow node {node['id']} has type {ntype!r}, which this ComfyUI does not know")
        info = object_info[ntype]
        inputs: dict[str, Any] = {}
        _fill_widgets(_spec_inputs(info), list(node.get("widgets_values") or []), 0, "", inputs)
        for inp in node.get("inputs", []):
            if inp.get("link") is not None:
                link = links[inp["link"]]
                inputs[inp["name"]] = [str(link[1]), link[2]]
        prompt[str(node["id"])] = {"class_type": ntype, "inputs": inputs,
                                   "_meta": {"title": node.get("title", ntype)}}
    return prompt


class UIGraph:
    """Builds a UI-format workflow from node types, widget values and connections."""

    def __init__(self, object_info: dict):
        self.info = object_info
        self.nodes: list[dict] = []
        self.links: list[list] = []
        self._col: dict[int, int] = {}     # column -> the y where its next node goes

    # Room for a node: its title, one row per output/input slot pair and per widget, and, under
    # FreeSwim's nodes, the lines of the FreeSwim panel (web/js/freeswim.js).
    ROW, TITLE, GAP, PANEL = 24, 30, 40, 7 * 15

    def _place(self, column: int, height: int) -> list:
        y = self._col.get(column, 40)
        self._col[column] = y + height + self.GAP
        return [40 + 380 * column, y]

    def add(self, ntype: str, widgets: dict | None = None, inputs: dict | None = None, *,
            title: str | None = None, column: int = 0) -> int:
        info = self.info[ntype]
        widgets = dict(widgets or {})
        node_id = len(self.nodes) + 1
        values = []
        for name, control in widget_names(info):
            kind, spec = next((k, o) for n, k, o in _spec_inputs(info) if n == name)
            value = widgets.pop(name, None)
            values.append(widget_default(kind, spec) if value is None else value)
            if control:
                values.append("fixed")
        if widgets:
            raise KeyError(f"{ntype} has no widgets {sorted(widgets)}")
        node_inputs = []
        for name, kind, opts in _spec_inputs(info):
            if is_widget(kind, opts):
                continue
            node_inputs.append({"name": name, "type": kind, "link": None})
        for name, (src, slot) in (inputs or {}).items():
            target = next((j for j, inp in enumerate(node_inputs) if inp["name"] == name), None)
            if target is None:
                raise KeyError(f"{ntype} has no connection input {name!r}")
            link_id = len(self.links) + 1
            src_node = self.nodes[src - 1]
            ltype = src_node["outputs"][slot]["type"]
            self.links.append([link_id, src, slot, node_id, target, ltype])
            node_inputs[target]["link"] = link_id
            src_node["outputs"][slot]["links"].append(link_id)
        outputs = [{"name": n, "type": t, "links": [], "slot_index": k}
                   for k, (t, n) in enumerate(zip(info.get("output", []), info.get("output_name", [])))]
        height = (self.TITLE + self.ROW * (max(len(node_inputs), len(outputs)) + len(widget_names(info)))
                  + (self.PANEL if ntype.startswith("FreeSwim") else 0))
        self.nodes.append({
            "id": node_id, "type": ntype, "pos": self._place(column, height), "size": [340, height],
            "flags": {}, "order": node_id - 1, "mode": 0, "inputs": node_inputs, "outputs": outputs,
            "properties": {"Node name for S&R": ntype}, "widgets_values": values,
            **({"title": title} if title else {}),
        })
        return node_id

    def note(self, text: str, *, column: int = 0) -> int:
        node_id = len(self.nodes) + 1
        self.nodes.append({"id": node_id, "type": "Note", "pos": self._place(column, 360),
                           "size": [360, 360], "flags": {}, "order": node_id - 1, "mode": 0, "inputs": [],
                           "outputs": [], "properties": {}, "widgets_values": [text],
                           "color": "#432", "bgcolor": "#653"})
        return node_id

    def to_json(self) -> dict:
        return {"last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": self.nodes,
                "links": self.links, "groups": [], "config": {}, "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}},
                "version": 0.4}


def declared_inputs(info: dict) -> list[str]:
    """Names of a node's top-level inputs, as its ``object_info`` declares them."""
    return [name for name, _, _ in _spec_inputs(info)]
