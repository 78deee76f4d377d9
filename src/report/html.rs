//! The document as one self-contained HTML file: inline CSS, inline SVG
//! bar charts, no scripts, no external resources. Every text comes from
//! the policy, the database or the log, so all of it is escaped.

use std::fmt::Write as _;

use html_escape::{encode_double_quoted_attribute as attr, encode_text as esc};

use super::document::{Bars, Block, Document, Section, Table};

const STYLE: &str = "
body { font: 15px/1.45 system-ui, -apple-system, 'Segoe UI', sans-serif; color: #1d2330; margin: 0; background: #f6f7f9; }
header { background: #243047; color: #fff; padding: 1.2em 2em; }
header h1 { margin: 0 0 .2em; font-size: 1.6em; }
header p { margin: 0; opacity: .85; }
nav { padding: .6em 2em; background: #e6e9ef; position: sticky; top: 0; }
nav a { margin-right: 1.1em; color: #243047; text-decoration: none; font-weight: 600; }
main { padding: 0 2em 3em; max-width: 1200px; }
section { background: #fff; margin: 1.4em 0; padding: .4em 1.4em 1.2em; border-radius: 6px; box-shadow: 0 1px 2px rgba(0,0,0,.08); }
h2 { border-bottom: 2px solid #e6e9ef; padding-bottom: .3em; }
h3 { margin-top: 1.6em; }
table { border-collapse: collapse; margin: .6em 0 1em; font-size: .92em; }
th, td { border: 1px solid #d5dae3; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #eef1f6; }
tr:nth-child(even) td { background: #fafbfc; }
pre { background: #f3f4f7; border: 1px solid #dde1e8; padding: .7em; overflow-x: auto; font-size: .85em; white-space: pre-wrap; }
figure { margin: .8em 0 1.2em; }
figcaption, .caption { font-weight: 600; margin-bottom: .3em; font-size: .92em; }
.note { color: #a23b2a; font-size: .9em; }
";

const CHART_WIDTH: u32 = 780;
const LABEL_WIDTH: u32 = 300;
const BAR_AREA: u32 = 400;
/// Characters of a bar label shown (the whole label is its tooltip).
const LABEL_CHARS: usize = 42;
const ROW_HEIGHT: u32 = 24;

/// The HTML file of `doc`.
pub fn render(doc: &Document) -> String {
    let mut out = String::with_capacity(64 * 1024);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <header><h1>{}</h1><p>{}</p></header>\n<nav>",
        esc(&doc.title),
        esc(&doc.title),
        esc(&doc.subtitle)
    );
    for section in &doc.sections {
        let _ = write!(
            out,
            "<a href=\"#{}\">{}</a>",
            attr(section.id),
            esc(&section.title)
        );
    }
    out.push_str("</nav>\n<main>\n");
    for section in &doc.sections {
        render_section(&mut out, section);
    }
    out.push_str("</main>\n</body>\n</html>\n");
    out
}

fn render_section(out: &mut String, section: &Section) {
    let _ = write!(
        out,
        "<section id=\"{}\">\n<h2>{}</h2>\n",
        attr(section.id),
        esc(&section.title)
    );
    for block in &section.blocks {
        render_block(out, block);
    }
    out.push_str("</section>\n");
}

fn render_block(out: &mut String, block: &Block) {
    match block {
        Block::Text(t) => {
            let _ = writeln!(out, "<p>{}</p>", esc(t));
        }
        Block::Heading { id: Some(id), text } => {
            let _ = writeln!(out, "<h3 id=\"{}\">{}</h3>", attr(id), esc(text));
        }
        Block::Heading { id: None, text } => {
            let _ = writeln!(out, "<h3>{}</h3>", esc(text));
        }
        Block::List(items) => {
            out.push_str("<ul>");
            for item in items {
                let _ = write!(out, "<li>{}</li>", esc(item));
            }
            out.push_str("</ul>\n");
        }
        Block::Table(t) => render_table(out, t),
        Block::Bars(b) => render_bars(out, b),
        Block::Code { caption, text } => {
            let _ = writeln!(
                out,
                "<div class=\"caption\">{}</div><pre>{}</pre>",
                esc(caption),
                esc(text)
            );
        }
    }
}

fn render_table(out: &mut String, table: &Table) {
    out.push_str("<table><thead><tr>");
    for h in &table.headers {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    if table.rows.is_empty() {
        let _ = write!(
            out,
            "<tr><td colspan=\"{}\">none</td></tr>",
            table.headers.len().max(1)
        );
    }
    for row in &table.rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{}</td>", esc(cell));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>\n");
}

/// A horizontal bar chart as inline SVG: label, bar, value.
fn render_bars(out: &mut String, bars: &Bars) {
    let max = bars.bars.iter().map(|(_, n)| *n).max().unwrap_or(0).max(1);
    let height = ROW_HEIGHT * bars.bars.len().max(1) as u32 + 4;
    let _ = write!(
        out,
        "<figure><figcaption>{}</figcaption>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{CHART_WIDTH}\" height=\"{height}\" \
         viewBox=\"0 0 {CHART_WIDTH} {height}\" role=\"img\" aria-label=\"{}\" font-family=\"system-ui, sans-serif\" font-size=\"12\">\n",
        esc(&bars.title),
        attr(&bars.title)
    );
    if bars.bars.is_empty() {
        let _ = write!(out, "<text x=\"0\" y=\"16\" fill=\"#555\">no data</text>");
    }
    for (i, (label, value)) in bars.bars.iter().enumerate() {
        let y = ROW_HEIGHT * i as u32 + 2;
        let width = (u64::from(BAR_AREA) * value / max) as u32;
        let _ = writeln!(
            out,
            "<g><title>{}: {value}</title>\
             <text x=\"{}\" y=\"{}\" text-anchor=\"end\" fill=\"#1d2330\">{}</text>\
             <rect x=\"{LABEL_WIDTH}\" y=\"{y}\" width=\"{width}\" height=\"{}\" rx=\"2\" fill=\"#4a78c2\"/>\
             <text x=\"{}\" y=\"{}\" fill=\"#1d2330\">{value}</text></g>",
            esc(label),
            LABEL_WIDTH - 8,
            y + 14,
            esc(&shorten(label, LABEL_CHARS)),
            ROW_HEIGHT - 6,
            LABEL_WIDTH + width + 6,
            y + 14,
        );
    }
    out.push_str("</svg>");
    if let Some(note) = &bars.note {
        let _ = write!(out, "<div class=\"note\">{}</div>", esc(note));
    }
    out.push_str("</figure>\n");
}

/// At most `max` characters, with `…` when cut.
fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_sql_from_the_database_are_escaped() {
        let doc = Document {
            title: "t".into(),
            subtitle: "s".into(),
            sections: vec![Section {
                id: "data-model",
                title: "<script>".into(),
                blocks: vec![
                    Block::Code {
                        caption: "x".into(),
                        text: "SELECT '</pre><img src=x onerror=alert(1)>'".into(),
                    },
                    Block::Bars(Bars {
                        title: "\"quoted\"".into(),
                        bars: vec![("a<b".into(), 3), ("c".into(), 0)],
                        note: None,
                    }),
                    Block::Heading {
                        id: Some("x\"y".into()),
                        text: "h".into(),
                    },
                ],
            }],
        };
        let html = render(&doc);
        assert!(!html.contains("<script>"));
        assert!(!html.contains("<img"));
        assert!(!html.contains("a<b"));
        assert!(html.contains("&lt;/pre&gt;&lt;img"));
        assert!(html.contains("id=\"x&quot;y\""));
        assert!(html.contains("aria-label=\"&quot;quoted&quot;\""));
        for external in ["<link", "<script", "href=\"http", "url("] {
            assert!(!html.contains(external), "{external} in {html}");
        }
    }
}
