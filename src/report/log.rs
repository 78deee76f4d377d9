//! Facts from the privacy log files: whether the chain is intact, who read
//! which classification how often, refused statements with their reasons,
//! the most frequent statements per view set, failed logins and
//! data-subject requests. Files are read line by line; only counts and the
//! last refusals are kept.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::audit;

use super::facts::{LogFacts, ReadCount, Refusal, TopStatement, REFUSALS_SHOWN, TOP_STATEMENTS};
use super::ReportError;

/// The fields of a record line the report uses.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Line {
    time: String,
    event: String,
    user: String,
    view_set: Option<String>,
    statement: Option<String>,
    tables: Vec<LineTable>,
    verdict: String,
    reason: Option<String>,
    rows: Option<u64>,
    duration_us: Option<u64>,
    sqlstate: Option<String>,
    action: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct LineTable {
    columns: Vec<LineColumn>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct LineColumn {
    classification: Option<String>,
}

/// Reads and verifies the log files, oldest first.
pub fn summarize(files: &[PathBuf]) -> Result<LogFacts, ReportError> {
    let verified = audit::verify(files)?;
    let mut tally = Tally::default();
    for path in files {
        tally.file(path)?;
    }
    Ok(tally.finish(verified.to_string(), verified.is_intact()))
}

#[derive(Default)]
struct Statement {
    count: u64,
    rows: u64,
    micros: u64,
}

#[derive(Default)]
struct Tally {
    files: Vec<(PathBuf, u64)>,
    records: u64,
    unreadable: u64,
    first: Option<String>,
    last: Option<String>,
    reads: BTreeMap<(String, String), u64>,
    refused: VecDeque<Refusal>,
    reasons: HashMap<String, u64>,
    statements: HashMap<(String, String), Statement>,
    logins: BTreeMap<String, u64>,
    actions: BTreeMap<(String, String), u64>,
}

impl Tally {
    fn file(&mut self, path: &Path) -> Result<(), ReportError> {
        let io = |source| ReportError::Io {
            path: path.to_path_buf(),
            source,
        };
        let reader = BufReader::new(File::open(path).map_err(io)?);
        let mut count = 0;
        for line in reader.lines() {
            match serde_json::from_str::<Line>(&line.map_err(io)?) {
                Ok(record) => {
                    count += 1;
                    self.record(record);
                }
                Err(_) => self.unreadable += 1,
            }
        }
        self.files.push((path.to_path_buf(), count));
        Ok(())
    }

    fn record(&mut self, line: Line) {
        self.records += 1;
        if self.first.is_none() {
            self.first = Some(line.time.clone());
        }
        self.last = Some(line.time.clone());
        match (line.event.as_str(), line.verdict.as_str()) {
            ("login", _) => *self.logins.entry(line.user).or_default() += 1,
            ("subject", verdict) => {
                let action = line.action.unwrap_or_default();
                *self
                    .actions
                    .entry((action, verdict.to_owned()))
                    .or_default() += 1;
            }
            ("statement", "refused") => self.refusal(line),
            ("statement", _) if line.sqlstate.is_none() => self.ran(line),
            _ => {}
        }
    }

    fn refusal(&mut self, line: Line) {
        let reason = line.reason.unwrap_or_default();
        *self.reasons.entry(reason.clone()).or_default() += 1;
        if self.refused.len() == REFUSALS_SHOWN {
            self.refused.pop_front();
        }
        self.refused.push_back(Refusal {
            time: line.time,
            user: line.user,
            view_set: line.view_set.unwrap_or_default(),
            statement: line.statement.unwrap_or_default(),
            reason,
            sqlstate: line.sqlstate.unwrap_or_default(),
        });
    }

    /// A statement that ran: counts its classifications and its text.
    fn ran(&mut self, line: Line) {
        let classes: BTreeSet<String> = line
            .tables
            .iter()
            .flat_map(|t| &t.columns)
            .map(|c| {
                c.classification
                    .clone()
                    .unwrap_or_else(|| "unclassified".into())
            })
            .collect();
        for class in classes {
            *self.reads.entry((line.user.clone(), class)).or_default() += 1;
        }
        let key = (
            line.view_set.unwrap_or_default(),
            line.statement.unwrap_or_default(),
        );
        let stat = self.statements.entry(key).or_default();
        stat.count += 1;
        stat.rows += line.rows.unwrap_or(0);
        stat.micros += line.duration_us.unwrap_or(0);
    }

    fn finish(self, verification: String, intact: bool) -> LogFacts {
        LogFacts {
            files: self.files,
            verification,
            intact,
            records: self.records,
            unreadable: self.unreadable,
            span: self.first.zip(self.last),
            reads: self
                .reads
                .into_iter()
                .map(|((user, class), statements)| ReadCount {
                    user,
                    class,
                    statements,
                })
                .collect(),
            refused: self.refused.into(),
            refusal_reasons: most_frequent_first(self.reasons.into_iter().collect()),
            top_statements: top_statements(self.statements),
            failed_logins: self.logins.into_iter().collect(),
            subject_actions: self
                .actions
                .into_iter()
                .map(|((action, verdict), n)| (action, verdict, n))
                .collect(),
        }
    }
}

fn most_frequent_first(mut counts: Vec<(String, u64)>) -> Vec<(String, u64)> {
    counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    counts
}

/// Per view set (by name), its [`TOP_STATEMENTS`] most frequent statements.
fn top_statements(
    statements: HashMap<(String, String), Statement>,
) -> Vec<(String, Vec<TopStatement>)> {
    let mut by_set: BTreeMap<String, Vec<TopStatement>> = BTreeMap::new();
    for ((set, statement), s) in statements {
        by_set.entry(set).or_default().push(TopStatement {
            statement,
            count: s.count,
            rows: s.rows,
            mean_ms: s.micros as f64 / s.count.max(1) as f64 / 1000.0,
        });
    }
    by_set
        .into_iter()
        .map(|(set, mut list)| {
            list.sort_by(|a, b| {
                b.count
                    .cmp(&a.count)
                    .then_with(|| a.statement.cmp(&b.statement))
            });
            list.truncate(TOP_STATEMENTS);
            (set, list)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(lines: &[serde_json::Value]) -> LogFacts {
        let mut t = Tally::default();
        for line in lines {
            t.record(serde_json::from_value(line.clone()).unwrap());
        }
        t.finish(String::new(), true)
    }

    #[test]
    fn statements_that_ran_count_once_per_class() {
        let read = |user: &str, classes: &[&str]| {
            let columns: Vec<_> = classes
                .iter()
                .map(|c| serde_json::json!({ "column": "x", "classification": c }))
                .collect();
            serde_json::json!({ "event": "statement", "verdict": "rewritten", "user": user,
                "view_set": "standard", "statement": "select x from t", "rows": 2,
                "duration_us": 3000, "tables": [{ "columns": columns }] })
        };
        let facts = tally(&[
            read("sam", &["identity", "identity", "personal"]),
            read("sam", &["identity"]),
            read("ana", &["personal"]),
            serde_json::json!({ "event": "statement", "verdict": "refused", "user": "sam",
                "reason": "no", "sqlstate": "42501", "statement": "set role x" }),
            serde_json::json!({ "event": "statement", "verdict": "forwarded", "user": "sam",
                "sqlstate": "22012", "statement": "select 1/0",
                "tables": [{ "columns": [{ "classification": "sensitive" }] }] }),
            serde_json::json!({ "event": "login", "verdict": "login_failed", "user": "eve" }),
            serde_json::json!({ "event": "subject", "verdict": "done", "user": "olivia", "action": "erase" }),
        ]);
        let reads: Vec<(&str, &str, u64)> = facts
            .reads
            .iter()
            .map(|r| (r.user.as_str(), r.class.as_str(), r.statements))
            .collect();
        assert_eq!(
            reads,
            vec![
                ("ana", "personal", 1),
                ("sam", "identity", 2),
                ("sam", "personal", 1)
            ]
        );
        assert_eq!(facts.refusal_reasons, vec![("no".to_string(), 1)]);
        assert_eq!(facts.refused[0].statement, "set role x");
        let (set, top) = &facts.top_statements[0];
        assert_eq!(set, "standard");
        assert_eq!((top[0].count, top[0].rows, top[0].mean_ms), (3, 6, 3.0));
        assert_eq!(facts.failed_logins, vec![("eve".to_string(), 1)]);
        assert_eq!(
            facts.subject_actions,
            vec![("erase".to_string(), "done".to_string(), 1)]
        );
    }
}
