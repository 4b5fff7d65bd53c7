// FreeSwim panel: the memory plan of the graph's FreeSwim pass, live, and the last run's report,
// drawn under each FreeSwim node. Plain JavaScript loaded by the ComfyUI frontend as is.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const NODES = new Set(["FreeSwimWindowAttentionPatch", "FreeSwimDualPathOverride", "FreeSwimCrossAttnCache",
                       "FreeSwimLatentUpscaleRefine"]);
let latentNodes = [];          // nodes that make a supported family's video latent, from /freeswim/families
const SETTING_VRAM = "FreeSwim.VRAMGB";
const POLL_MS = 400;
const LINE_H = 15;

let systemVram = null;       // GB, from /system_stats
const reports = {};          // node id -> the last run report of that node

function widget(node, name) {
  const w = node?.widgets?.find((x) => x.name === name);
  return w ? w.value : undefined;
}

function findNodes(graph, type) {
  return (graph?._nodes || []).filter((n) => n.type === type || n.comfyClass === type);
}

function upstreamLoader(node) {
  let current = node;
  for (let hop = 0; current && hop < 32; hop++) {
    if (current.type === "UNETLoader" || current.comfyClass === "UNETLoader") return current;
    const slot = current.findInputSlot ? current.findInputSlot("model") : -1;
    if (slot < 0) return null;
    current = current.getInputNode ? current.getInputNode(slot) : null;
  }
  return null;
}

// Our nodes' translations by locale (the server's /i18n, from locales/<lang>/nodeDefs.json). The
// frontend applies them itself; some frontends (1.32) drop a custom node's messages when they load
// a locale lazily, so a new node's title and its widget and socket labels are also set here from
// the same files.
let nodeTranslations = {};

function currentLocale() {
  return app.extensionManager?.setting?.get?.("Comfy.Locale") || app.ui?.settings?.getSettingValue?.("Comfy.Locale")
    || "en";
}

function translateLabels(node) {
  const def = nodeTranslations[currentLocale()]?.[node.comfyClass || node.type];
  if (!def) return;
  if (def.display_name && node.title === node.constructor?.title) node.title = def.display_name;
  for (const item of [...(node.widgets || []), ...(node.inputs || [])]) {
    const name = def.inputs?.[item.name]?.name;
    if (name) item.label = name;
  }
}

function vramGB() {
  const setting = app.ui?.settings?.getSettingValue?.(SETTING_VRAM, 0);
  return setting > 0 ? setting : systemVram;
}

// The planner request for the graph's FreeSwim pass, read off its nodes' widgets.
export function planRequest(graph) {
  const patch = findNodes(graph, "FreeSwimWindowAttentionPatch")[0];
  const refine = findNodes(graph, "FreeSwimLatentUpscaleRefine")[0];
  if (!patch && !refine) return null;
  const dual = findNodes(graph, "FreeSwimDualPathOverride")[0];
  const cache = findNodes(graph, "FreeSwimCrossAttnCache")[0];
  const latent = latentNodes.map((t) => findNodes(graph, t)[0]).find(Boolean);
  const loader = upstreamLoader(patch || dual || cache || refine) || findNodes(graph, "UNETLoader")[0];
  const unet = widget(loader, "unet_name");
  const loaded = String(widget(loader, "weight_dtype") || "default");
  let width = widget(refine, "width") ?? widget(latent, "width") ?? 1920;
  let height = widget(refine, "height") ?? widget(latent, "height") ?? 1088;
  const scale = widget(refine, "scale_by") || 0;
  if (refine && scale > 0 && latent) {
    width = Math.round(widget(latent, "width") * scale);
    height = Math.round(widget(latent, "height") * scale);
  }
  const native = widget(patch, "native_size") || "auto";
  const request = {
    model_file: String(unet || ""), width, height, frames: widget(latent, "length") ?? 81,
    native_size: native === "custom" ? `${widget(patch, "custom_width")}x${widget(patch, "custom_height")}` : native,
    mode: cache ? "cache" : dual ? "dual" : "window",
    execution: widget(dual, "execution") || "auto",
    backend: widget(patch, "backend") || "auto",
    inward: widget(patch, "inward") ?? true,
    cache_interval: widget(cache, "guide_interval") ?? 2,
    storage: widget(cache, "storage") || "auto",
    precision: widget(cache, "precision") || "model",
    weight_dtype: loaded.startsWith("fp8") || String(unet || "").includes("fp8") ? "fp8" : "bf16",
  };
  if (refine && refine.findInputSlot) {      // Wan2.2 A14B: the high-noise expert connected too
    const slot = refine.findInputSlot("model_high_noise");
    if (slot >= 0 && refine.inputs?.[slot]?.link != null) request.experts = 2;
  }
  const vram = vramGB();
  if (vram) request.vram_gb = vram;
  return request;
}

const gb = (b) => (b / 1e9).toFixed(1);

export function planLines(plan) {
  const lines = [];
  const [t, h, w] = plan.grid;
  lines.push(`FreeSwim ${plan.width}x${plan.height}x${plan.frames}: ${t}x${h}x${w} tokens, window ` +
             `${plan.window[0]}x${plan.window[1]} (${(100 * plan.attention_share).toFixed(1)}% of full attention)`);
  const budget = plan.budget_bytes ? ` of ${gb(plan.budget_bytes)} GB: ${plan.fits ? "fits" : "does not fit"}` : "";
  const kernel = plan.windowed ? `, ${plan.window_backend} window` : "";
  lines.push(`GPU: ${gb(plan.peak_bytes)} GB peak (${plan.peak_phase}, ${plan.execution}${kernel}) + ` +
             `${Math.round((plan.headroom - 1) * 100)}% = ${gb(plan.needed_bytes)} GB${budget}`);
  if (plan.cache) {
    const where = plan.cache.storage ? `in ${plan.cache.storage === "cpu" ? "host RAM" : "GPU memory"}` : "off (does not fit)";
    lines.push(`cache: ${gb(plan.cache.bytes)} GB (${plan.cache.precision}) ${where}`);
  }
  const vae = plan.vae && plan.vae.encode;
  if (vae) {
    lines.push(vae.tile ? `VAE: ${vae.tiles} spatial tiles of ${vae.tile[0]}x${vae.tile[1]}, every frame at once`
                        : "VAE: whole frames, every frame at once");
  }
  for (const note of plan.notes || []) lines.push(note);
  for (const warning of plan.warnings || []) lines.push(`⚠ ${warning}`);
  return lines;
}

export function reportLines(report) {
  if (!report) return [];
  const calls = `${report.windowed_calls} windowed calls, ${report.dual_calls + report.guide_calls} with the full ` +
                `branch, ${report.reuse_calls} reusing the cache`;
  const cache = report.cache_storage ? `, cache ${gb(report.cache_bytes)} GB on ${report.cache_storage}` :
                report.cache_off_reason ? ", cache off" : "";
  const lines = [`last run: ${(report.backends || []).join("+") || "no window"} backend, ${calls}${cache}, ` +
                 `${report.attention_seconds.toFixed(1)} s in window attention`];
  const passed = Object.entries(report.backends_passed_over || {});
  if (passed.length) lines.push(`not used: ${passed.map(([name, why]) => `${name} (${why})`).join("; ")}`);
  if ((report.unreached_blocks || []).length) {
    lines.push(`⚠ blocks ${report.unreached_blocks.join(", ")}: self-attention never reached FreeSwim`);
  }
  return lines;
}

function panel(node) {
  if (!node.freeswimPanel) node.freeswimPanel = { request: null, plan: null, lines: [], report: null, error: null };
  return node.freeswimPanel;
}

let lastKey = null;
let pending = null;
async function refresh() {
  const graph = app.graph;
  const request = planRequest(graph);
  const nodes = (graph?._nodes || []).filter((n) => NODES.has(n.type) || NODES.has(n.comfyClass));
  for (const node of nodes) {
    const p = panel(node);
    p.report = reports[String(node.id)] || p.report;
  }
  if (!request) return;
  const key = JSON.stringify(request);
  if (key === lastKey) return;
  lastKey = key;
  clearTimeout(pending);
  pending = setTimeout(async () => {
    let plan = null;
    let error = null;
    try {
      const res = await api.fetchApi("/freeswim/plan", { method: "POST", body: key,
                                                         headers: { "Content-Type": "application/json" } });
      const body = await res.json();
      if (res.ok) plan = body; else error = body.error || `HTTP ${res.status}`;
    } catch (e) {
      error = String(e);
    }
    for (const node of nodes) {
      const p = panel(node);
      Object.assign(p, { request, plan, error, lines: plan ? planLines(plan) : [`⚠ FreeSwim plan: ${error}`] });
    }
    graph.setDirtyCanvas?.(true, true);
  }, 250);
}

const SUMMARY_LINES = 2;      // the patch nodes show the plan's first lines; the refine node all of it

function panelLines(node) {
  const p = node.freeswimPanel;
  if (!p) return [];
  const full = node.type === "FreeSwimLatentUpscaleRefine" || node.comfyClass === "FreeSwimLatentUpscaleRefine";
  const lines = p.lines || [];
  const shown = full ? lines : [...lines.slice(0, SUMMARY_LINES), ...lines.filter((l) => l.startsWith("⚠"))];
  return [...shown, ...reportLines(p.report)];
}

function wrap(ctx, text, width) {
  const out = [];
  let line = "";
  for (const word of text.split(" ")) {
    const next = line ? `${line} ${word}` : word;
    if (line && ctx.measureText(next).width > width) {
      out.push(line);
      line = `  ${word}`;
    } else {
      line = next;
    }
  }
  if (line) out.push(line);
  return out;
}

// The panel sits in a band at the bottom of the node, which grows by the band's height.
function drawPanel(node, ctx) {
  const lines = panelLines(node);
  if (!lines.length) return;
  ctx.save();
  ctx.font = "11px sans-serif";
  ctx.textAlign = "left";
  const rows = lines.flatMap((l) => wrap(ctx, l, node.size[0] - 16).map((r) => [l, r]));
  const band = rows.length * LINE_H + 10;
  if (node.freeswimBand !== band) {
    const natural = node.computeSize ? node.computeSize()[1] : node.size[1] - (node.freeswimBand || 0);
    node.freeswimBand = band;
    node.size[1] = natural + band;
  }
  let y = node.size[1] - band + 4;
  ctx.fillStyle = "rgba(0, 0, 0, 0.25)";
  ctx.fillRect(2, y - 2, node.size[0] - 4, band - 4);
  for (const [line, row] of rows) {
    y += LINE_H;
    ctx.fillStyle = line.startsWith("⚠") ? "#f5a623" : line.startsWith("last run") ? "#7ec8e3" : "#cccccc";
    ctx.fillText(row, 8, y - 4);
  }
  ctx.restore();
}

app.registerExtension({
  name: "freeswim.panel",
  settings: [{ id: SETTING_VRAM, name: "FreeSwim: GPU memory for the plan in GB (0: this machine's)",
               type: "number", defaultValue: 0 }],
  async setup() {
    try {
      const stats = await (await api.fetchApi("/system_stats")).json();
      const device = (stats.devices || [])[0];
      if (device && device.vram_total) systemVram = Math.round(device.vram_total / 1e8) / 10;
    } catch (e) {
      systemVram = null;
    }
    try {
      const all = await (await api.fetchApi("/i18n")).json();
      for (const [locale, messages] of Object.entries(all || {})) {
        const defs = messages?.nodeDefs || {};
        nodeTranslations[locale] = Object.fromEntries([...NODES].filter((t) => defs[t]).map((t) => [t, defs[t]]));
      }
    } catch (e) {
      nodeTranslations = {};
    }
    try {
      const families = await (await api.fetchApi("/freeswim/families")).json();
      latentNodes = families.flatMap((f) => f.latent_nodes || []);
    } catch (e) {
      latentNodes = [];
    }
    api.addEventListener("freeswim.report", (event) => {
      const { node, report } = event.detail || {};
      if (node == null) return;
      reports[String(node)] = report;
      const target = app.graph?.getNodeById?.(Number(node)) || app.graph?.getNodeById?.(node);
      if (target) panel(target).report = report;
      app.graph?.setDirtyCanvas?.(true, true);
    });
    setInterval(refresh, POLL_MS);
  },
  async nodeCreated(node) {
    if (!NODES.has(node.comfyClass) && !NODES.has(node.type)) return;
    translateLabels(node);
    panel(node);
    const draw = node.onDrawForeground;
    node.onDrawForeground = function (ctx) {
      const r = draw ? draw.apply(this, arguments) : undefined;
      drawPanel(this, ctx);
      return r;
    };
    lastKey = null;     // a new FreeSwim node: plan again
  },
});
