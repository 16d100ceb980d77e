"""The HTML report's stylesheet, inlined so the report is one self-contained file.

System fonts only (no web fonts), light and dark schemes, and the colours the Gantt
chart's classes use. No side effects.
"""

from __future__ import annotations

__all__ = ["CSS"]

CSS = """
:root{--bg:#f3f4f6;--card:#fff;--fg:#1f2328;--muted:#656d76;--line:#d8dee4;--stripe:#f6f8fa;
--ok:#1a7f37;--ok-bg:#dafbe1;--bad:#cf222e;--bad-bg:#ffebe9;--warn:#bf8700;--warn-bg:#fff8c5;
--run:#0969da;--run-bg:#ddf4ff;--stop:#6e7781;--stop-bg:#eaeef2;--loop:#8250df;
--mono:ui-monospace,SFMono-Regular,Menlo,Consolas,"Liberation Mono",monospace}
@media (prefers-color-scheme:dark){:root{--bg:#0d1117;--card:#161b22;--fg:#e6edf3;
--muted:#8d96a0;--line:#30363d;--stripe:#1c2129;--ok:#3fb950;--ok-bg:#12361f;--bad:#f85149;
--bad-bg:#3d1418;--warn:#d29922;--warn-bg:#3b2e0a;--run:#4493f8;--run-bg:#0c2d55;
--stop:#8d96a0;--stop-bg:#262c36;--loop:#a371f7}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);
font:14px/1.5 -apple-system,BlinkMacSystemFont,"Segoe UI","Noto Sans",Helvetica,Arial,sans-serif}
main{max-width:1240px;margin:0 auto;padding:24px}
code,pre{font-family:var(--mono)}
code{font-size:12.5px;background:var(--stripe);border:1px solid var(--line);border-radius:4px;
padding:0 4px;word-break:break-word}
.muted{color:var(--muted)}
.hero{background:linear-gradient(120deg,#111827 0%,#1e1b4b 55%,#312e81 100%);color:#f9fafb;
border-radius:14px;padding:22px 28px 20px;box-shadow:0 8px 24px rgba(17,24,39,.18)}
.hero .kicker{font-size:11px;letter-spacing:.14em;text-transform:uppercase;color:#a5b4fc}
.hero h1{margin:4px 0 2px;font-size:28px;display:flex;align-items:center;gap:12px;
flex-wrap:wrap}
.hero .why{color:#e0e7ff;margin:6px 0 0;max-width:100ch}
.hero .src{color:#a5b4fc;font-size:12px;margin-top:14px;font-family:var(--mono);
word-break:break-all}
.stats{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:12px;
margin-top:18px}
.stat{background:rgba(255,255,255,.07);border:1px solid rgba(255,255,255,.12);
border-radius:10px;padding:10px 14px}
.stat .k{font-size:11px;text-transform:uppercase;letter-spacing:.08em;color:#c7d2fe}
.stat .v{font-size:22px;font-weight:650;margin-top:2px;font-variant-numeric:tabular-nums}
.stat .s{font-size:12px;color:#c7d2fe}
.progress{height:6px;background:rgba(255,255,255,.18);border-radius:3px;margin-top:6px;
overflow:hidden}
.progress i{display:block;height:100%;background:#4ade80;border-radius:3px}
.badge{display:inline-block;padding:2px 12px;border-radius:999px;font-size:13px;
font-weight:650;letter-spacing:.02em;vertical-align:middle;white-space:nowrap}
.hero .badge{font-size:14px;color:#fff;background:#6b7280}
.hero .badge.Succeeded{background:#16a34a}.hero .badge.Failed{background:#dc2626}
.hero .badge.Running{background:#2563eb}.hero .badge.Invalid{background:#9333ea}
.hero .badge.Cancelled{background:#6b7280}.hero .badge.Pending{background:#6b7280}
.pill{display:inline-block;padding:0 8px;border-radius:999px;font-size:12px;font-weight:600;
background:var(--stop-bg);color:var(--stop)}
.pill.Succeeded,.pill.succeeded,.pill.run,.pill.true{background:var(--ok-bg);color:var(--ok)}
.pill.Failed,.pill.failed,.pill.fail{background:var(--bad-bg);color:var(--bad)}
.pill.retrying,.pill.Waiting,.pill.goto{background:var(--warn-bg);color:var(--warn)}
.pill.Running,.pill.running,.pill.Queued{background:var(--run-bg);color:var(--run)}
.pill.goto{background:#f3e8ff;color:var(--loop)}
section{background:var(--card);border:1px solid var(--line);border-radius:12px;
padding:16px 20px;margin-top:18px}
section h2{font-size:16px;margin:0 0 12px;display:flex;align-items:baseline;gap:10px}
section h2 .muted{font-size:13px;font-weight:400}
h4{margin:14px 0 6px;font-size:13px}
table{border-collapse:collapse;width:100%;font-size:13px}
th{text-align:left;font-weight:600;color:var(--muted);font-size:12px;text-transform:uppercase;
letter-spacing:.04em;border-bottom:1px solid var(--line);padding:6px 8px}
td{border-bottom:1px solid var(--line);padding:7px 8px;vertical-align:top}
tr:last-child td{border-bottom:none}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.total td{font-weight:650;border-top:2px solid var(--line)}
td.when{white-space:nowrap;color:var(--muted);font-variant-numeric:tabular-nums}
.reads{margin:0;padding:0;list-style:none}.reads li{margin:1px 0}
.meter{height:8px;background:var(--stripe);border-radius:4px;min-width:120px;overflow:hidden}
.meter i{display:block;height:100%;background:linear-gradient(90deg,#6366f1,#8b5cf6)}
pre{background:var(--stripe);border:1px solid var(--line);border-radius:8px;padding:10px 12px;
margin:4px 0 8px;overflow:auto;max-height:460px;white-space:pre-wrap;word-break:break-word;
font-size:12px;line-height:1.45}
pre.output{max-height:640px;font-size:13px}
details{border:1px solid var(--line);border-radius:8px;margin:6px 0;background:var(--card)}
summary{cursor:pointer;padding:7px 12px;display:flex;align-items:center;gap:8px;flex-wrap:wrap}
summary::marker{color:var(--muted)}
details[open]>summary{border-bottom:1px solid var(--line)}
details:target{outline:2px solid var(--loop)}
.body{padding:6px 14px 10px}
.dot{display:inline-block;width:9px;height:9px;border-radius:50%;background:var(--stop)}
.dot.succeeded{background:var(--ok)}.dot.failed{background:var(--bad)}
.dot.retrying{background:var(--warn)}.dot.running{background:var(--run)}
.facts{font-size:12.5px;color:var(--muted);margin:6px 0}
.facts span{display:inline-block;margin-right:18px;white-space:nowrap}
.facts b{color:var(--fg);font-weight:600}
.note{font-size:13px;margin:6px 0;padding:6px 10px;border-left:3px solid var(--warn);
background:var(--warn-bg);border-radius:0 6px 6px 0}
.note.err{border-color:var(--bad);background:var(--bad-bg)}
.legend{display:flex;flex-wrap:wrap;gap:6px 16px;font-size:12px;color:var(--muted);
margin-bottom:8px}
.sw{display:inline-block;width:12px;height:12px;border-radius:3px;margin-right:6px;
vertical-align:-2px;background:var(--stop)}
.sw.succeeded{background:var(--ok)}.sw.failed{background:var(--bad)}
.sw.retrying{background:var(--warn)}.sw.running{background:var(--run)}
.sw.backoff,.sw.loop{background:none;height:0;width:18px;border-radius:0;
border-top:2px dashed var(--warn);vertical-align:3px}
.sw.loop{border-top-color:var(--loop)}
.chart{overflow-x:auto}
.gantt{display:block;min-width:760px}
.gantt text{font-size:12px;fill:var(--fg);font-family:inherit}
.gantt .tick{fill:var(--muted);font-size:11px;font-variant-numeric:tabular-nums}
.gantt .grid{stroke:var(--line);stroke-width:1}
.gantt .stripe{fill:var(--stripe)}
.gantt .label .sub{fill:var(--loop);font-size:11px;font-weight:600}
.gantt .bar{stroke:rgba(0,0,0,.08)}
.gantt .bar.succeeded{fill:var(--ok)}.gantt .bar.failed{fill:var(--bad)}
.gantt .bar.retrying{fill:var(--warn)}.gantt .bar.running{fill:var(--run)}
.gantt .bar.stopped{fill:var(--stop)}
.gantt a:hover .bar{stroke:var(--fg);stroke-width:1.5}
.gantt .backoff{stroke:var(--warn);stroke-width:2;stroke-dasharray:4 3}
.gantt .loop line{stroke:var(--loop);stroke-width:1.5;stroke-dasharray:5 4}
.gantt .loop line.sep{stroke-dasharray:none;stroke-width:1;opacity:.35}
.gantt .loop text{fill:var(--loop);font-size:11px;font-weight:650}
.gantt text.skip{fill:var(--muted);font-style:italic}
.gantt circle.skip{fill:none;stroke:var(--muted);stroke-width:1.5}
.gantt circle.skip.succeeded{stroke:var(--ok)}.gantt circle.skip.failed{stroke:var(--bad)}
.gantt text.skip.failed{fill:var(--bad)}
.logs a{margin-right:10px}
.gantt .dur{fill:var(--muted);font-size:11px;font-variant-numeric:tabular-nums}
.gantt .dur.failed{fill:var(--bad)}.gantt .dur.running{fill:var(--run)}
footer{color:var(--muted);font-size:12px;text-align:center;margin:22px 0 8px}
"""
