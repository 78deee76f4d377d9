//! The document as Markdown (GitHub flavour): the same sections, with
//! element ids as HTML anchors, tables as pipe tables, bar charts as tables
//! with text bars, and code in fences.

use std::fmt::Write as _;

use super::document::{Bars, Block, Document, Table};

/// Width of the longest text bar, in characters.
const BAR_CHARS: u64 = 30;

/// The Markdown file of `doc`.
pub fn render(doc: &Document) -> String {
    let mut out = format!(
        "# {}\n\n_{}_\n\n",
        inline(&doc.title),
        inline(&doc.subtitle)
    );
    for section in &doc.sections {
        let _ = writeln!(out, "- [{}](#{})", inline(&section.title), section.id);
    }
    for section in &doc.sections {
        let _ = write!(
            out,
            "\n<a id=\"{}\"></a>\n\n## {}\n\n",
            section.id,
            inline(&section.title)
        );
        for block in &section.blocks {
            render_block(&mut out, block);
        }
    }
    out
}

fn render_block(out: &mut String, block: &Block) {
    match block {
        Block::Text(t) => {
            let _ = writeln!(out, "{}\n", inline(t));
        }
        Block::Heading { id, text } => {
            if let Some(id) = id {
                let _ = writeln!(out, "<a id=\"{}\"></a>\n", anchor_id(id));
            }
            let _ = writeln!(out, "### {}\n", inline(text));
        }
        Block::List(items) => {
            for item in items {
                let _ = writeln!(out, "- {}", inline(item));
            }
            out.push('\n');
        }
        Block::Table(t) => render_table(out, t),
        Block::Bars(b) => render_bars(out, b),
        Block::Code { caption, text } => {
            let fence = "`".repeat(longest_backtick_run(text).max(2) + 1);
            let _ = writeln!(out, "**{}**\n\n{fence}\n{text}\n{fence}\n", inline(caption));
        }
    }
}

fn render_table(out: &mut String, table: &Table) {
    let header: Vec<String> = table.headers.iter().map(|h| inline(h)).collect();
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(table.headers.len().max(1)));
    if table.rows.is_empty() {
        let blanks = " |".repeat(table.headers.len().saturating_sub(1));
        let _ = writeln!(out, "| none |{blanks}");
    }
    for row in &table.rows {
        let cells: Vec<String> = row.iter().map(|c| inline(c)).collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    out.push('\n');
}

fn render_bars(out: &mut String, bars: &Bars) {
    let max = bars.bars.iter().map(|(_, n)| *n).max().unwrap_or(0).max(1);
    let _ = writeln!(out, "**{}**\n", inline(&bars.title));
    let rows = bars
        .bars
        .iter()
        .map(|(label, n)| {
            let bar = "█".repeat((BAR_CHARS * n / max) as usize);
            vec![label.clone(), n.to_string(), bar]
        })
        .collect();
    render_table(
        out,
        &Table {
            headers: vec![String::new(), "count".into(), String::new()],
            rows,
        },
    );
    if let Some(note) = &bars.note {
        let _ = writeln!(out, "_{}_\n", inline(note));
    }
}

/// Text with Markdown's inline syntax characters escaped and no line breaks.
fn inline(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '#' | '|' | '&' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// An element id safe inside the quotes of an HTML attribute.
fn anchor_id(id: &str) -> String {
    id.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

fn longest_backtick_run(text: &str) -> usize {
    text.split(|c| c != '`').map(str::len).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::document::Section;

    #[test]
    fn tables_code_and_bars_survive_odd_text() {
        let doc = Document {
            title: "T".into(),
            subtitle: "S".into(),
            sections: vec![Section {
                id: "consent",
                title: "Consent".into(),
                blocks: vec![
                    Block::Table(Table {
                        headers: vec!["a|b".into(), "c".into()],
                        rows: vec![vec!["x\ny".into(), "*_at".into()]],
                    }),
                    Block::Code {
                        caption: "v".into(),
                        text: "select '```'".into(),
                    },
                    Block::Bars(Bars {
                        title: "B".into(),
                        bars: vec![("one".into(), 2), ("two".into(), 4)],
                        note: None,
                    }),
                ],
            }],
        };
        let md = render(&doc);
        assert!(md.contains("<a id=\"consent\"></a>"));
        assert!(md.contains("| a\\|b | c |"));
        assert!(md.contains("| x y | \\*\\_at |"));
        assert!(md.contains("````\nselect '```'\n````"));
        assert!(md.contains(&format!("| two | 4 | {} |", "█".repeat(30))));
        assert!(md.contains(&format!("| one | 2 | {} |", "█".repeat(15))));
    }
}
