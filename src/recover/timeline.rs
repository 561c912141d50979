//! The recovery timeline as a picture: a [`Timeline`] records, from the
//! engine's effects while `recover` runs, when each service's unit start was
//! issued, when its start job finished (running), when it became healthy,
//! its restarts and deaths, and when each stage started and passed (or
//! failed) its gate; [`to_svg`] draws it in the spirit of `systemd-analyze
//! plot` as a self-contained SVG (no scripts, no external fonts).

use std::fmt::Write as _;

use serde::Serialize;

use crate::engine::{Effect, Note, World};

use super::Report;

/// What happened to one service during the run (milliseconds since the
/// run began).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ServiceLine {
    /// Service name.
    pub name: String,
    /// The service has a unit (external services have none and are only
    /// checked).
    pub has_unit: bool,
    /// First start of its unit issued.
    pub start_ms: Option<u64>,
    /// Its start job finished with `done` (the process runs).
    pub running_ms: Option<u64>,
    /// It passed all its checks (the latest time, after restarts).
    pub healthy_ms: Option<u64>,
    /// Restarts issued.
    pub restarts_ms: Vec<u64>,
    /// Its unit was seen dead (stopped or failed while starting or healthy).
    pub deaths_ms: Vec<u64>,
    /// It is the slowest service of its stage (the report's critical path).
    pub critical: bool,
    /// Its latest state when that is `external` (another controller's
    /// container, left alone) or `waiting` (for an operator): shown next
    /// to its name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub left_as: Option<&'static str>,
}

/// What happened to one stage and its services.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct StageLine {
    /// Stage name.
    pub name: String,
    /// The stage started (preflight, then its units).
    pub started_ms: Option<u64>,
    /// The stage passed its gate (`Some(true)`) or failed (`Some(false)`)...
    pub gate_ok: Option<bool>,
    /// ... at this time.
    pub gate_ms: Option<u64>,
    /// It waited for a failed `block` stage.
    pub blocked: bool,
    /// Its services, in plan order.
    pub services: Vec<ServiceLine>,
}

/// The recorded timeline of one recovery run.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Timeline {
    /// Platform name.
    pub platform: String,
    /// Stages in order.
    pub stages: Vec<StageLine>,
    /// Length of the run (ms).
    pub total_ms: u64,
    /// The report's outcome (`all_healthy`, ...), once finished.
    pub outcome: String,
    /// Engine time the picture starts at (`None`: the run's beginning;
    /// a drill's: when it began).
    #[serde(skip)]
    pub origin: Option<u64>,
}

impl Timeline {
    /// An empty timeline with the stages and services of `w` (before the run).
    pub fn of_world(w: &World) -> Timeline {
        let stages = w
            .stages
            .iter()
            .map(|st| StageLine {
                name: st.info.name.clone(),
                services: st
                    .info
                    .members
                    .iter()
                    .filter_map(|&m| w.services.get(m))
                    .map(|s| ServiceLine {
                        name: s.info.name.clone(),
                        has_unit: s.info.unit.is_some(),
                        ..ServiceLine::default()
                    })
                    .collect(),
                ..StageLine::default()
            })
            .collect();
        Timeline {
            platform: w.platform.clone(),
            stages,
            ..Timeline::default()
        }
    }

    fn service(&mut self, name: &str) -> Option<&mut ServiceLine> {
        self.stages
            .iter_mut()
            .flat_map(|st| st.services.iter_mut())
            .find(|s| s.name == name)
    }

    /// Record effect `e` of the engine (world `w` after the step), which
    /// happened `at_ms` after the run began.
    pub fn record(&mut self, w: &World, e: &Effect, at_ms: u64) {
        let name = |svc: usize| w.services.get(svc).map(|s| s.info.name.clone());
        // The runner carries out `Effect::Start` itself; the note of the
        // service going `starting` comes out of the same step.
        if let Effect::Note(note) = e {
            self.note(w, note, at_ms, &name);
        }
    }

    fn note(&mut self, w: &World, note: &Note, at_ms: u64, name: &dyn Fn(usize) -> Option<String>) {
        match note {
            Note::StageStarted(i) => {
                if let Some(st) = self.stages.get_mut(*i) {
                    st.started_ms.get_or_insert(at_ms);
                }
            }
            Note::StageDone { stage, healthy } => {
                if let Some(st) = self.stages.get_mut(*stage) {
                    st.gate_ok = Some(*healthy);
                    st.gate_ms = Some(at_ms);
                }
            }
            Note::Blocked { stage, .. } => {
                if let Some(st) = self.stages.get_mut(*stage) {
                    st.blocked = true;
                }
            }
            Note::UnitStarted { svc, result } => {
                let done = matches!(result, Ok((job, _)) if job == "done");
                if let Some(s) = name(*svc).and_then(|n| self.service(&n)) {
                    if done && s.running_ms.is_none() {
                        s.running_ms = Some(at_ms);
                    }
                }
            }
            Note::RestartIssued { svc, .. } => {
                if let Some(s) = name(*svc).and_then(|n| self.service(&n)) {
                    s.restarts_ms.push(at_ms);
                }
            }
            Note::ServiceState { svc, new, .. } => {
                let Some(sv) = w.services.get(*svc) else {
                    return;
                };
                let origin = self.origin.unwrap_or(w.began_at);
                let healthy_at = sv.report.healthy_at.map(|t| t.saturating_sub(origin));
                let dead = sv.unit_down();
                if let Some(s) = self.service(&sv.info.name.clone()) {
                    s.left_as = matches!(*new, "external" | "waiting").then_some(*new);
                    if *new == "starting" && s.has_unit {
                        s.start_ms.get_or_insert(at_ms);
                    } else if *new == "healthy" {
                        s.healthy_ms = Some(healthy_at.unwrap_or(at_ms));
                    } else if *new == "unhealthy" && dead {
                        s.deaths_ms.push(at_ms);
                    }
                }
            }
            _ => {}
        }
    }

    /// Close the timeline with the run's report: its length, outcome and
    /// critical path.
    pub fn finish(&mut self, report: &Report) {
        let total = (report.total_s * 1000.0).round();
        self.total_ms = if total.is_finite() && total > 0.0 {
            total as u64
        } else {
            0
        };
        self.outcome = serde_json::to_value(report.outcome)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        for c in &report.critical_path {
            if let Some(st) = self.stages.iter_mut().find(|st| st.name == c.stage) {
                for s in &mut st.services {
                    s.critical = s.name == c.service;
                }
            }
        }
    }

    /// The latest time anything happened (at least `total_ms`).
    fn end_ms(&self) -> u64 {
        let mut end = self.total_ms;
        for st in &self.stages {
            end = end
                .max(st.started_ms.unwrap_or(0))
                .max(st.gate_ms.unwrap_or(0));
            for s in &st.services {
                for t in [s.start_ms, s.running_ms, s.healthy_ms]
                    .into_iter()
                    .flatten()
                {
                    end = end.max(t);
                }
                for &t in s.restarts_ms.iter().chain(&s.deaths_ms) {
                    end = end.max(t);
                }
            }
        }
        end
    }
}

/// Escape `s` for XML text and attribute values.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\t' && c != '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

const WIDTH: f64 = 1200.0;
const LABEL_W: f64 = 300.0;
const CHART_X: f64 = LABEL_W + 10.0;
const CHART_W: f64 = WIDTH - CHART_X - 40.0;
const ROW_H: f64 = 22.0;
const TOP: f64 = 70.0;

const C_START: &str = "#6baed6";
const C_PREFLIGHT: &str = "#d9d9d9";
const C_GATED: &str = "#969696";
const C_RUN: &str = "#31a354";
const C_UNHEALTHY: &str = "#fdae6b";
const C_CRITICAL: &str = "#d7301f";
const C_GATE_OK: &str = "#006d2c";
const C_GATE_FAIL: &str = "#a50f15";
const C_RESTART: &str = "#3f007d";
const C_DEATH: &str = "#cb181d";

/// A tick step (seconds) that gives at most about 12 ticks for `span_s`.
fn tick_step(span_s: f64) -> f64 {
    const STEPS: [f64; 12] = [
        0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
    ];
    STEPS
        .iter()
        .copied()
        .find(|s| span_s / s <= 12.0)
        .unwrap_or(3600.0)
}

fn secs(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

/// Draw `t` as a self-contained SVG: one row per service under a header row
/// per stage, bars from unit start to running (light) and from running to
/// healthy (green; orange when it never became healthy), each stage's gate
/// as a vertical line, restarts (triangles) and deaths (crosses), the
/// critical path outlined in red with bold names, a time axis in seconds
/// and a legend.
pub fn to_svg(t: &Timeline) -> String {
    let end = t.end_ms().max(1000);
    let span_s = end as f64 / 1000.0;
    let step = tick_step(span_s);
    let axis_s = (span_s / step).ceil() * step;
    let x = |ms: u64| CHART_X + (ms as f64 / 1000.0) / axis_s * CHART_W;
    let rows: usize = t.stages.iter().map(|s| 1 + s.services.len()).sum();
    let chart_h = rows as f64 * ROW_H;
    let legend_y = TOP + chart_h + 40.0;
    let height = legend_y + 60.0;

    let mut o = String::new();
    let _ = write!(
        o,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" \
         width=\"{WIDTH}\" height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n"
    );
    let title = format!(
        "Recovery of {}: {}{}",
        t.platform,
        secs(t.total_ms),
        if t.outcome.is_empty() {
            String::new()
        } else {
            format!(" ({})", t.outcome.replace('_', " "))
        }
    );
    let _ = writeln!(o, "<title>{}</title>", xml_escape(&title));
    let _ = writeln!(
        o,
        "<rect x=\"0\" y=\"0\" width=\"{WIDTH}\" height=\"{height}\" fill=\"#ffffff\"/>"
    );
    let _ = writeln!(
        o,
        "<text class=\"title\" x=\"{}\" y=\"28\" font-size=\"18\" font-weight=\"bold\">{}</text>",
        CHART_X - LABEL_W,
        xml_escape(&title)
    );

    // Time axis: grid lines, labels above and below.
    let _ = writeln!(o, "<g class=\"axis\">");
    let mut k = 0.0;
    while k <= axis_s + 1e-9 {
        let xx = CHART_X + k / axis_s * CHART_W;
        let label = if step < 1.0 {
            format!("{k:.1} s")
        } else {
            format!("{k:.0} s")
        };
        let _ = writeln!(
            o,
            "<line class=\"tick\" x1=\"{xx:.1}\" y1=\"{:.1}\" x2=\"{xx:.1}\" y2=\"{:.1}\" \
             stroke=\"#dddddd\" stroke-width=\"1\"/>\
             <text x=\"{xx:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#555555\">{label}</text>\
             <text x=\"{xx:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#555555\">{label}</text>",
            TOP - 6.0,
            TOP + chart_h,
            TOP - 10.0,
            TOP + chart_h + 16.0,
        );
        k += step;
    }
    let _ = writeln!(o, "</g>");

    let mut y = TOP;
    for st in &t.stages {
        let stage_top = y;
        let stage_rows = 1 + st.services.len();
        let stage_bottom = stage_top + stage_rows as f64 * ROW_H;
        let status = match (st.gate_ok, st.blocked) {
            (Some(true), _) => "gate passed".to_owned(),
            (Some(false), _) => "failed".to_owned(),
            (None, true) => "blocked".to_owned(),
            (None, false) => "not finished".to_owned(),
        };
        let dur = match (st.started_ms, st.gate_ms) {
            (Some(a), Some(b)) => format!(", {}", secs(b.saturating_sub(a))),
            _ => String::new(),
        };
        let _ = writeln!(
            o,
            "<g class=\"stage\" data-stage=\"{}\">",
            xml_escape(&st.name)
        );
        let _ = writeln!(
            o,
            "<rect x=\"0\" y=\"{y:.1}\" width=\"{WIDTH}\" height=\"{ROW_H}\" fill=\"#eeeeee\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-weight=\"bold\">stage {} ({status}{dur})</text>",
            CHART_X - LABEL_W,
            y + 15.0,
            xml_escape(&st.name)
        );
        if let Some(a) = st.started_ms {
            let b = st.gate_ms.unwrap_or(t.total_ms.max(a));
            // Preflight until its first unit start, then gated.
            let first = st
                .services
                .iter()
                .filter_map(|s| s.start_ms)
                .min()
                .unwrap_or(a)
                .clamp(a, b);
            for (class, fill, from, to) in [
                ("preflight", C_PREFLIGHT, a, first),
                ("gated", C_GATED, first, b),
            ] {
                if to > from {
                    let _ = writeln!(
                        o,
                        "<rect class=\"stage-span {class}\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" \
                         height=\"8\" fill=\"{fill}\"><title>{} {class}: {} to {}</title></rect>",
                        x(from),
                        y + 7.0,
                        (x(to) - x(from)).max(1.0),
                        xml_escape(&st.name),
                        secs(from),
                        secs(to)
                    );
                }
            }
        }
        let _ = writeln!(o, "</g>");
        y += ROW_H;
        for s in &st.services {
            draw_service(&mut o, s, st.started_ms, t.total_ms, y, &x);
            y += ROW_H;
        }
        if let (Some(ok), Some(g)) = (st.gate_ok, st.gate_ms) {
            let c = if ok { C_GATE_OK } else { C_GATE_FAIL };
            let gx = x(g);
            let _ = writeln!(
                o,
                "<g class=\"gate\"><line x1=\"{gx:.1}\" y1=\"{stage_top:.1}\" x2=\"{gx:.1}\" \
                 y2=\"{stage_bottom:.1}\" stroke=\"{c}\" stroke-width=\"2\" \
                 stroke-dasharray=\"5,3\"/><path d=\"M {gx:.1} {:.1} l 6 6 l -6 6 l -6 -6 z\" \
                 fill=\"{c}\"/></g>",
                stage_top + 5.0
            );
        }
    }

    legend(&mut o, legend_y);
    o.push_str("</svg>\n");
    o
}

fn draw_service(
    o: &mut String,
    s: &ServiceLine,
    stage_start: Option<u64>,
    total_ms: u64,
    y: f64,
    x: &dyn Fn(u64) -> f64,
) {
    let _ = writeln!(
        o,
        "<g class=\"row{}\" data-service=\"{}\">",
        if s.critical { " critical" } else { "" },
        xml_escape(&s.name)
    );
    let label = match (s.has_unit, s.left_as) {
        (_, Some("external")) => format!("{} (another controller's)", s.name),
        (_, Some(state)) => format!("{} ({state})", s.name),
        (true, None) => s.name.clone(),
        (false, None) => format!("{} (external)", s.name),
    };
    let _ = writeln!(
        o,
        "<text x=\"{:.1}\" y=\"{:.1}\"{}>{}</text>",
        CHART_X - LABEL_W + 14.0,
        y + 15.0,
        if s.critical {
            format!(" font-weight=\"bold\" fill=\"{C_CRITICAL}\"")
        } else {
            String::new()
        },
        xml_escape(&label)
    );
    let stroke = if s.critical {
        format!(" stroke=\"{C_CRITICAL}\" stroke-width=\"2\"")
    } else {
        String::new()
    };
    let bar = |o: &mut String, class: &str, fill: &str, a: u64, b: u64| {
        let _ = writeln!(
            o,
            "<rect class=\"bar {class}\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"14\" \
             fill=\"{fill}\"{stroke}><title>{}</title></rect>",
            x(a),
            y + 4.0,
            (x(b) - x(a)).max(2.0),
            xml_escape(&format!("{} {class}: {} to {}", s.name, secs(a), secs(b)))
        );
    };
    // Where the "running" part starts: the start job's end, else (external
    // services, or a unit already running) the unit start, else the stage.
    let run_from = s.running_ms.or(s.start_ms).or(stage_start);
    if let (Some(a), Some(b)) = (s.start_ms, s.running_ms) {
        bar(o, "start", C_START, a, b);
    }
    if let Some(a) = run_from {
        match s.healthy_ms {
            Some(h) => bar(o, "healthy", C_RUN, a.min(h), h),
            None => bar(o, "unhealthy", C_UNHEALTHY, a, total_ms.max(a)),
        }
    }
    for &r in &s.restarts_ms {
        let _ = writeln!(
            o,
            "<path class=\"restart\" d=\"M {:.1} {:.1} l 6 11 l -12 0 z\" fill=\"{C_RESTART}\"><title>restart at {}</title></path>",
            x(r),
            y + 5.0,
            secs(r)
        );
    }
    for &d in &s.deaths_ms {
        let (cx, cy) = (x(d), y + 11.0);
        let _ = writeln!(
            o,
            "<path class=\"death\" d=\"M {:.1} {:.1} l 10 10 M {:.1} {:.1} l -10 10\" stroke=\"{C_DEATH}\" stroke-width=\"3\"><title>died at {}</title></path>",
            cx - 5.0,
            cy - 5.0,
            cx + 5.0,
            cy - 5.0,
            secs(d)
        );
    }
    let _ = writeln!(o, "</g>");
}

fn legend(o: &mut String, y0: f64) {
    let _ = writeln!(o, "<g class=\"legend\">");
    let items = [
        "stage preflight",
        "stage gated",
        "unit start to running",
        "running to healthy",
        "never healthy",
        "critical path",
        "stage gate",
        "restart",
        "death",
    ];
    let mut lx = CHART_X - LABEL_W;
    let mut y = y0;
    for (i, text) in items.iter().enumerate() {
        let w = 22.0 + text.len() as f64 * 6.6 + 18.0;
        if lx + w > WIDTH {
            lx = CHART_X - LABEL_W;
            y += 20.0;
        }
        let swatch = |fill: &str, extra: &str| {
            format!(
                "<rect x=\"{lx:.1}\" y=\"{:.1}\" width=\"16\" height=\"12\" fill=\"{fill}\"{extra}/>",
                y + 2.0
            )
        };
        let glyph = match i {
            0 => swatch(C_PREFLIGHT, ""),
            1 => swatch(C_GATED, ""),
            2 => swatch(C_START, ""),
            3 => swatch(C_RUN, ""),
            4 => swatch(C_UNHEALTHY, ""),
            5 => swatch(
                "#ffffff",
                &format!(" stroke=\"{C_CRITICAL}\" stroke-width=\"2\""),
            ),
            6 => format!(
                "<path d=\"M {:.1} {:.1} l 6 6 l -6 6 l -6 -6 z\" fill=\"{C_GATE_OK}\"/>",
                lx + 8.0,
                y + 2.0
            ),
            7 => format!(
                "<path d=\"M {:.1} {:.1} l 6 11 l -12 0 z\" fill=\"{C_RESTART}\"/>",
                lx + 8.0,
                y + 2.0
            ),
            _ => format!(
                "<path d=\"M {:.1} {:.1} l 10 10 M {:.1} {:.1} l -10 10\" stroke=\"{C_DEATH}\" stroke-width=\"3\"/>",
                lx + 3.0,
                y + 3.0,
                lx + 13.0,
                y + 3.0
            ),
        };
        let _ = writeln!(
            o,
            "{glyph}<text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            lx + 22.0,
            y + 12.0,
            xml_escape(text)
        );
        lx += w;
    }
    let _ = writeln!(o, "</g>");
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn svc(name: &str, start: u64, run: u64, healthy: Option<u64>) -> ServiceLine {
        ServiceLine {
            name: name.to_owned(),
            has_unit: true,
            start_ms: Some(start),
            running_ms: Some(run),
            healthy_ms: healthy,
            ..ServiceLine::default()
        }
    }

    fn sample() -> Timeline {
        let mut db = svc("db<&\"x'>", 100, 900, Some(4200));
        db.critical = true;
        let mut web = svc("web", 4300, 5000, None);
        web.restarts_ms = vec![9000, 15000];
        web.deaths_ms = vec![8000];
        Timeline {
            platform: "plat & co".to_owned(),
            total_ms: 20_000,
            outcome: "some_failed".to_owned(),
            origin: None,
            stages: vec![
                StageLine {
                    name: "base".to_owned(),
                    started_ms: Some(0),
                    gate_ok: Some(true),
                    gate_ms: Some(4250),
                    blocked: false,
                    services: vec![
                        db,
                        ServiceLine {
                            name: "dns".to_owned(),
                            healthy_ms: Some(300),
                            ..ServiceLine::default()
                        },
                    ],
                },
                StageLine {
                    name: "apps".to_owned(),
                    started_ms: Some(4250),
                    gate_ok: Some(false),
                    gate_ms: Some(20_000),
                    blocked: false,
                    services: vec![web],
                },
            ],
        }
    }

    fn class_count(doc: &roxmltree::Document<'_>, tag: &str, class: &str) -> usize {
        doc.descendants()
            .filter(|n| n.has_tag_name(tag))
            .filter(|n| {
                n.attribute("class")
                    .is_some_and(|c| c.split(' ').any(|w| w == class))
            })
            .count()
    }

    #[test]
    fn svg_is_well_formed_with_rows_bars_and_marks() {
        let svg = to_svg(&sample());
        let doc = roxmltree::Document::parse(&svg).expect("well-formed XML");
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "svg");
        assert!(root.attribute("width").unwrap().parse::<f64>().unwrap() >= 800.0);
        assert_eq!(class_count(&doc, "g", "stage"), 2);
        assert_eq!(class_count(&doc, "g", "row"), 3);
        assert_eq!(class_count(&doc, "g", "critical"), 1);
        // db: start + healthy; dns (external): healthy from its stage's
        // start; web: start + never healthy.
        assert_eq!(class_count(&doc, "rect", "start"), 2);
        assert_eq!(class_count(&doc, "rect", "healthy"), 2);
        assert_eq!(class_count(&doc, "rect", "unhealthy"), 1);
        assert_eq!(class_count(&doc, "path", "restart"), 2);
        assert_eq!(class_count(&doc, "path", "death"), 1);
        assert_eq!(class_count(&doc, "g", "gate"), 2);
        // 20 s in steps of 2 s: 0..=20.
        assert_eq!(class_count(&doc, "line", "tick"), 11);
        assert!(svg.contains("20.0 s"), "title has the total time");
        assert!(!svg.contains("<script"));
        assert!(!svg.contains("@font-face") && !svg.contains("url("));
    }

    #[test]
    fn names_are_escaped() {
        let svg = to_svg(&sample());
        assert!(svg.contains("db&lt;&amp;&quot;x&apos;&gt;"));
        assert!(!svg.contains("db<&"));
        assert!(svg.contains("plat &amp; co"));
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let names: Vec<&str> = doc
            .descendants()
            .filter_map(|n| n.attribute("data-service"))
            .collect();
        assert_eq!(names, ["db<&\"x'>", "dns", "web"]);
    }

    #[test]
    fn empty_timeline_still_draws() {
        let svg = to_svg(&Timeline::default());
        roxmltree::Document::parse(&svg).unwrap();
    }

    /// Runs the engine's recovery of the plan tests' sample platform,
    /// answering its effects as a healthy host would (the probes of `bad`
    /// fail until `proxy` is killed once stage 1 is gated), and records
    /// every effect the runner would hand to `recover`.
    #[test]
    fn records_starts_health_gates_restarts_and_deaths_from_the_engine() {
        use std::collections::VecDeque;

        use crate::drive::UnitState;
        use crate::engine::history::PersistedState;
        use crate::engine::{next_deadline, step, Event, Goal, StagePhase, World};

        fn running(n: u64) -> UnitState {
            UnitState {
                load_state: "loaded".into(),
                active_state: "active".into(),
                sub_state: "running".into(),
                result: "success".into(),
                inactive_exit_usec: n,
                ..UnitState::default()
            }
        }
        struct Run {
            w: World,
            now: u64,
            tl: Timeline,
            queue: VecDeque<Effect>,
            bad: bool,
            n: u64,
        }
        impl Run {
            fn ev(&mut self, e: Event) {
                for fx in step(&mut self.w, e, self.now) {
                    let at = self.now.saturating_sub(self.w.began_at);
                    self.tl.record(&self.w, &fx, at);
                    self.queue.push_back(fx);
                }
            }
            fn drain(&mut self) {
                while let Some(fx) = self.queue.pop_front() {
                    match fx {
                        Effect::Preflight { stage, token, .. } => self.ev(Event::PreflightDone {
                            stage,
                            token,
                            problems: Vec::new(),
                        }),
                        Effect::Start { svc, token, .. } | Effect::Restart { svc, token, .. } => {
                            self.n += 1;
                            let st = running(self.n);
                            self.ev(Event::JobDone {
                                svc,
                                token,
                                result: Ok(("done".into(), st)),
                            });
                        }
                        Effect::Probe { svc, check, token } => {
                            let ok = !(self.bad && self.w.services[svc].info.name == "proxy");
                            self.ev(Event::ProbeDone {
                                waiting: false,
                                svc,
                                check,
                                token,
                                ok,
                                detail: String::new(),
                            });
                        }
                        _ => {}
                    }
                }
            }
            fn tick(&mut self) {
                let next = next_deadline(&self.w).unwrap_or(self.now + 100);
                self.now = next.clamp(self.now + 1, self.now + 100);
                self.ev(Event::Tick);
                self.drain();
            }
        }

        let cfg = crate::plan::tests::sample();
        let plan = crate::plan::build(&cfg).unwrap();
        let w = World::new(&cfg, &plan, Goal::Recover, &PersistedState::default());
        let tl = Timeline::of_world(&w);
        let mut r = Run {
            w,
            now: 1_000,
            tl,
            queue: VecDeque::new(),
            bad: true,
            n: 0,
        };
        r.ev(Event::Begin);
        r.drain();
        while !matches!(r.w.stages[1].phase, StagePhase::Gating { .. }) {
            r.tick();
        }
        r.tick();
        let proxy = r.w.find("proxy").unwrap();
        let exit = r.w.services[proxy]
            .unit
            .as_ref()
            .unwrap()
            .inactive_exit_usec;
        let mut dead = running(exit);
        dead.active_state = "failed".into();
        dead.sub_state = "failed".into();
        dead.result = "signal".into();
        r.ev(Event::Unit {
            svc: proxy,
            state: dead,
        });
        r.bad = false;
        r.drain();
        for _ in 0..10_000 {
            if r.w.settled() {
                break;
            }
            r.tick();
        }
        assert!(r.w.settled());
        let report = Report::from_world(&r.w, r.now);
        let mut tl = r.tl;
        tl.finish(&report);
        assert_eq!(tl.outcome, "all_healthy");
        assert_eq!(tl.total_ms, r.now - r.w.began_at);
        assert_eq!(tl.stages.len(), r.w.stages.len());
        for st in &tl.stages {
            assert!(st.started_ms.is_some(), "{st:?}");
            assert_eq!(st.gate_ok, Some(true), "{st:?}");
            assert_eq!(st.services.iter().filter(|s| s.critical).count(), 1);
            for s in &st.services {
                let h = s.healthy_ms.unwrap();
                if s.has_unit {
                    let (a, b) = (s.start_ms.unwrap(), s.running_ms.unwrap());
                    assert!(a <= b && b <= h, "{s:?}");
                } else {
                    assert_eq!(s.start_ms, None);
                }
            }
        }
        let p = tl
            .stages
            .iter()
            .flat_map(|st| &st.services)
            .find(|s| s.name == "proxy")
            .unwrap();
        assert_eq!(p.deaths_ms.len(), 1, "{p:?}");
        assert_eq!(p.restarts_ms.len(), 1, "{p:?}");
        assert!(p.deaths_ms[0] <= p.restarts_ms[0]);
        assert!(p.healthy_ms.unwrap() >= p.restarts_ms[0]);
        let svg = to_svg(&tl);
        let doc = roxmltree::Document::parse(&svg).unwrap();
        assert_eq!(class_count(&doc, "path", "death"), 1);
        assert_eq!(class_count(&doc, "path", "restart"), 1);
    }

    #[test]
    fn tick_steps() {
        assert_eq!(tick_step(1.0), 0.5);
        assert_eq!(tick_step(20.0), 2.0);
        assert_eq!(tick_step(100.0), 10.0);
    }
}
