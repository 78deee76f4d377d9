//! Reading policy files and merging them into one [`Policy`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::error::{Location, PolicyError, Problem};
use super::model::PolicyFile;
use super::{Entry, Policy, Source};

/// Reads the given files; a directory contributes its `*.toml` files in name order.
pub fn read_sources(paths: &[PathBuf]) -> Result<Vec<Source>, PolicyError> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            files.extend(toml_files_in(path)?);
        } else {
            files.push(path.clone());
        }
    }
    if files.is_empty() {
        return Err(PolicyError::NoFiles(paths.to_vec()));
    }
    files
        .into_iter()
        .map(|path| match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Source { path, text }),
            Err(source) => Err(PolicyError::Io { path, source }),
        })
        .collect()
}

fn toml_files_in(dir: &Path) -> Result<Vec<PathBuf>, PolicyError> {
    let io = |source| PolicyError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.extension().is_some_and(|e| e == "toml") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Parses every source and merges them; names defined twice are errors.
pub fn merge(sources: Vec<Source>) -> Result<Policy, PolicyError> {
    let mut problems = Vec::new();
    let mut parsed = Vec::new();
    for (index, source) in sources.iter().enumerate() {
        match toml::from_str::<PolicyFile>(&source.text) {
            Ok(file) => parsed.push((index, file)),
            Err(e) => problems.push(parse_problem(source, &e)),
        }
    }
    let mut policy = Policy {
        sources,
        settings: None,
        subject: None,
        consent: None,
        purposes: BTreeMap::new(),
        tables: BTreeMap::new(),
        masks: BTreeMap::new(),
        admin: None,
        view_sets: BTreeMap::new(),
        roles: BTreeMap::new(),
        users: BTreeMap::new(),
    };
    for (file, content) in parsed {
        let mut m = Merger {
            sources: &policy.sources,
            file,
            problems: &mut problems,
        };
        m.single("settings", &mut policy.settings, content.settings);
        m.single("subject", &mut policy.subject, content.subject);
        m.single("consent", &mut policy.consent, content.consent);
        m.single("admin", &mut policy.admin, content.admin);
        m.map("purposes", &mut policy.purposes, content.purposes);
        m.map("tables", &mut policy.tables, content.tables);
        m.map("masks", &mut policy.masks, content.masks);
        m.map("view_sets", &mut policy.view_sets, content.view_sets);
        m.map("roles", &mut policy.roles, content.roles);
        m.map("users", &mut policy.users, content.users);
    }
    if problems.is_empty() {
        Ok(policy)
    } else {
        Err(PolicyError::Invalid(problems))
    }
}

fn parse_problem(source: &Source, e: &toml::de::Error) -> Problem {
    let location = e
        .span()
        .map(|span| Location::from_offset(&source.path, &source.text, span.start));
    let message = e.message().trim().to_string();
    let fix = if message.starts_with("unknown field") || message.starts_with("unknown variant") {
        "use one of the expected names listed; see policies/README.md"
    } else {
        "correct the TOML syntax or value type; see policies/README.md"
    };
    Problem {
        location,
        message,
        fix: fix.into(),
    }
}

struct Merger<'a> {
    sources: &'a [Source],
    file: usize,
    problems: &'a mut Vec<Problem>,
}

impl Merger<'_> {
    fn location(&self, file: usize, path: &[&str]) -> Option<Location> {
        let source = self.sources.get(file)?;
        let (line, column) = super::locate::locate(&source.text, path)?;
        Some(Location {
            file: source.path.clone(),
            line,
            column,
        })
    }

    fn duplicate(&mut self, path: &[&str], first_file: usize) {
        let what = path.join(".");
        let first_at = self
            .location(first_file, path)
            .map_or_else(String::new, |l| l.to_string());
        self.problems.push(Problem {
            location: self.location(self.file, path),
            message: format!("{what} is defined twice (first at {first_at})"),
            fix: "keep one definition".into(),
        });
    }

    fn single<T>(&mut self, what: &str, slot: &mut Option<Entry<T>>, value: Option<T>) {
        let Some(value) = value else { return };
        match slot {
            Some(first) => self.duplicate(&[what], first.file),
            None => {
                *slot = Some(Entry {
                    value,
                    file: self.file,
                })
            }
        }
    }

    fn map<K: Ord + Serialize, T>(
        &mut self,
        what: &str,
        target: &mut BTreeMap<K, Entry<T>>,
        values: BTreeMap<K, T>,
    ) {
        for (key, value) in values {
            match target.get(&key) {
                Some(first) => {
                    let name = key_name(&key);
                    self.duplicate(&[what, &name], first.file)
                }
                None => {
                    target.insert(
                        key,
                        Entry {
                            value,
                            file: self.file,
                        },
                    );
                }
            }
        }
    }
}

/// The policy-file spelling of a map key (a name or an enum like `standard`).
fn key_name<K: Serialize>(key: &K) -> String {
    match toml::Value::try_from(key) {
        Ok(toml::Value::String(s)) => s,
        _ => String::new(),
    }
}
