//! The report as a document: sections of text, tables, bar charts and code,
//! built from the facts. HTML and Markdown render the same document.

use super::facts::{
    Facts, KFacts, LogFacts, PurposeFacts, RoleFacts, TableModel, ViewSetFacts, VIEW_KINDS,
};

/// The whole report.
#[derive(Debug, Clone)]
pub struct Document {
    /// Its title.
    pub title: String,
    /// One line under the title.
    pub subtitle: String,
    /// Its sections, in order.
    pub sections: Vec<Section>,
}

/// One top-level section, with a stable element id.
#[derive(Debug, Clone)]
pub struct Section {
    /// Element id (`data-model`, `view-sets`, ...).
    pub id: &'static str,
    /// Heading.
    pub title: String,
    /// Content.
    pub blocks: Vec<Block>,
}

/// One piece of content.
#[derive(Debug, Clone)]
pub enum Block {
    /// A paragraph.
    Text(String),
    /// A sub-heading, with an element id when it is a stable anchor.
    Heading {
        /// Element id.
        id: Option<String>,
        /// Text.
        text: String,
    },
    /// A bulleted list.
    List(Vec<String>),
    /// A table.
    Table(Table),
    /// A horizontal bar chart.
    Bars(Bars),
    /// Preformatted text (SQL, verification output).
    Code {
        /// What it is.
        caption: String,
        /// The text.
        text: String,
    },
}

/// A table of text cells.
#[derive(Debug, Clone)]
pub struct Table {
    /// Column headings.
    pub headers: Vec<String>,
    /// Rows of cells, as many as headings.
    pub rows: Vec<Vec<String>>,
}

/// A horizontal bar chart of counts.
#[derive(Debug, Clone)]
pub struct Bars {
    /// What is counted.
    pub title: String,
    /// Label and value per bar.
    pub bars: Vec<(String, u64)>,
    /// A marked bar label (e.g. the band holding groups below k), if any.
    pub note: Option<String>,
}

fn text(s: impl Into<String>) -> Block {
    Block::Text(s.into())
}

fn heading(id: Option<String>, s: impl Into<String>) -> Block {
    Block::Heading { id, text: s.into() }
}

fn table(headers: &[&str], rows: Vec<Vec<String>>) -> Block {
    Block::Table(Table {
        headers: headers.iter().map(|h| h.to_string()).collect(),
        rows,
    })
}

fn or_dash(value: Option<&str>) -> String {
    value.unwrap_or("–").to_owned()
}

/// A stable element id from a name: lower-case letters, digits and `-`.
pub fn anchor(prefix: &str, name: &str) -> String {
    let slug: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    format!("{prefix}-{slug}")
}

/// The document of `facts`.
pub fn build(facts: &Facts) -> Document {
    Document {
        title: "pgveil privacy report".into(),
        subtitle: format!("{} — generated {}", facts.database, facts.generated_at),
        sections: vec![
            summary(facts),
            data_model(&facts.tables),
            view_sets(&facts.view_sets),
            access(&facts.roles),
            drift(facts),
            privacy_log(facts.log.as_ref()),
            consent(&facts.consent),
            k_anonymity(&facts.k_anonymity),
        ],
    }
}

fn summary(facts: &Facts) -> Section {
    let columns = facts.tables.iter().flat_map(|t| &t.columns);
    let mut by_class: Vec<(String, u64)> = ["identity", "personal", "sensitive", "non_personal"]
        .iter()
        .map(|c| (c.to_string(), 0))
        .collect();
    let mut unclassified = 0;
    for column in columns {
        match by_class
            .iter_mut()
            .find(|(c, _)| Some(c.as_str()) == column.class.as_deref())
        {
            Some((_, n)) => *n += 1,
            None => unclassified += 1,
        }
    }
    by_class.push(("unclassified".into(), unclassified));
    let drift = &facts.drift;
    let installed = match &drift.installed_fingerprint {
        None => "no views are installed (run pgveil apply)".to_owned(),
        Some(fp) if *fp != drift.policy_fingerprint => {
            "the installed views belong to another version of the policy (run pgveil apply)"
                .to_owned()
        }
        Some(_) if !drift.changes.is_empty() => format!(
            "the installed objects drifted from the policy ({} differences; run pgveil apply)",
            drift.changes.len()
        ),
        Some(_) => "the installed views match the policy".to_owned(),
    };
    let log = match &facts.log {
        Some(log) if log.intact => format!("privacy log: {} records, chain intact", log.records),
        Some(log) => format!("privacy log: {} records, chain BROKEN", log.records),
        None => "privacy log: not read (no --audit files and no [audit] file)".into(),
    };
    Section {
        id: "summary",
        title: "Summary".into(),
        blocks: vec![
            Block::List(vec![
                format!(
                    "{} protected tables, {} view sets, {} roles",
                    facts.tables.len(),
                    facts.view_sets.len(),
                    facts.roles.len()
                ),
                installed,
                format!("{} findings of pgveil check", drift.findings.len()),
                log,
            ]),
            Block::Bars(Bars {
                title: "Columns per classification".into(),
                bars: by_class,
                note: None,
            }),
        ],
    }
}

fn data_model(tables: &[TableModel]) -> Section {
    let mut blocks = vec![text(
        "Every protected table and column with its classification, kind and the mask each view kind applies. \
         Columns the policy does not classify are hidden from every view set except personal ones.",
    )];
    let mut headers = vec!["column", "type", "class", "kind"];
    headers.extend(VIEW_KINDS.iter().map(|k| k.name()));
    for t in tables {
        blocks.push(heading(
            Some(anchor("table", &t.name)),
            format!("Table {}", t.name),
        ));
        let mut rules = Vec::new();
        if !t.exists {
            rules.push("missing from the database: columns as the policy names them".to_owned());
        }
        rules.push(format!("erase: {}", or_dash(t.erase.as_deref())));
        rules.push(format!("retention: {}", or_dash(t.retention.as_deref())));
        blocks.push(text(rules.join("; ")));
        let rows = t
            .columns
            .iter()
            .map(|c| {
                let mut row = vec![
                    c.name.clone(),
                    or_dash(c.type_name.as_deref()),
                    c.class.clone().unwrap_or_else(|| "unclassified".into()),
                    or_dash(c.kind.as_deref()),
                ];
                row.extend(c.masks.iter().cloned());
                row
            })
            .collect();
        blocks.push(table(&headers, rows));
    }
    Section {
        id: "data-model",
        title: "Logical data model".into(),
        blocks,
    }
}

fn view_sets(sets: &[ViewSetFacts]) -> Section {
    let mut blocks = vec![text(
        "Each view set is a schema of views (security_barrier views where they hide rows); its backend login roles read nothing else. \
         The SQL is the definition installed in the database (pg_get_viewdef).",
    )];
    for set in sets {
        blocks.push(heading(
            Some(anchor("view-set", &set.name)),
            format!("View set {} ({})", set.name, set.kind),
        ));
        if let Some(d) = &set.description {
            blocks.push(text(d.clone()));
        }
        let mut facts = vec![
            format!("schema: {}", set.schema),
            format!("login roles: {}", set.login_roles.join(", ")),
        ];
        facts.extend(set.settings.iter().cloned());
        blocks.push(Block::List(facts));
        if !set.row_filters.is_empty() {
            let rows = set
                .row_filters
                .iter()
                .map(|(t, f)| vec![t.clone(), f.clone()])
                .collect();
            blocks.push(table(&["table", "row filter"], rows));
        }
        if set.views.is_empty() {
            blocks.push(text("No views are installed for this view set."));
        }
        for (view, sql) in &set.views {
            blocks.push(Block::Code {
                caption: format!("{}.{view}", set.schema),
                text: sql.trim().to_owned(),
            });
        }
    }
    Section {
        id: "view-sets",
        title: "View sets and their SQL".into(),
        blocks,
    }
}

fn access(roles: &[RoleFacts]) -> Section {
    let rows = roles
        .iter()
        .map(|r| {
            let sets = if r.admin {
                let mut all = vec!["admin (base tables)".to_owned()];
                all.extend(r.view_sets.iter().cloned());
                all
            } else {
                r.view_sets
                    .iter()
                    .map(|s| match &r.default {
                        Some(d) if d == s => format!("{s} (default)"),
                        _ => s.clone(),
                    })
                    .collect()
            };
            let users: Vec<String> = r
                .users
                .iter()
                .map(|(u, attrs)| {
                    if attrs.is_empty() {
                        u.clone()
                    } else {
                        format!("{u} ({attrs})")
                    }
                })
                .collect();
            vec![
                r.name.clone(),
                sets.join(", "),
                users.join(", "),
                or_dash(r.description.as_deref()),
            ]
        })
        .collect();
    Section {
        id: "access",
        title: "Roles, users and view sets".into(),
        blocks: vec![table(&["role", "view sets", "users", "description"], rows)],
    }
}

fn drift(facts: &Facts) -> Section {
    let d = &facts.drift;
    let mut blocks = vec![Block::List(vec![
        format!("policy fingerprint: {}", d.policy_fingerprint),
        format!(
            "installed fingerprint: {}",
            or_dash(d.installed_fingerprint.as_deref())
        ),
    ])];
    blocks.push(heading(
        Some("drift-check".into()),
        "Policy against the catalog (pgveil check)",
    ));
    if d.findings.is_empty() {
        blocks.push(text("No findings: the policy fits the database."));
    } else {
        blocks.push(Block::List(d.findings.clone()));
    }
    blocks.push(heading(
        Some("drift-objects".into()),
        "What pgveil apply would change",
    ));
    match (&d.changes_error, d.changes.is_empty()) {
        (Some(e), _) => blocks.push(text(format!("Could not be computed: {e}"))),
        (None, true) => blocks.push(text("Nothing: the installed objects match the policy.")),
        (None, false) => blocks.push(Block::Code {
            caption: "- as installed / + as the policy wants it".into(),
            text: d.changes.join("\n"),
        }),
    }
    Section {
        id: "drift",
        title: "Drift between policy and database".into(),
        blocks,
    }
}

fn privacy_log(log: Option<&LogFacts>) -> Section {
    let Some(log) = log else {
        return Section {
            id: "privacy-log",
            title: "Privacy log".into(),
            blocks: vec![text(
                "No privacy log was read: pass --audit FILE... or configure [audit] file.",
            )],
        };
    };
    let mut blocks = log_overview(log);
    blocks.extend(reads(log));
    blocks.extend(refusals(log));
    blocks.extend(top_statements(log));
    blocks.extend(logins_and_requests(log));
    Section {
        id: "privacy-log",
        title: "Privacy log".into(),
        blocks,
    }
}

fn log_overview(log: &LogFacts) -> Vec<Block> {
    let files: Vec<String> = log
        .files
        .iter()
        .map(|(p, n)| format!("{}: {n} records", p.display()))
        .collect();
    let mut facts = files;
    if let Some((first, last)) = &log.span {
        facts.push(format!("from {first} to {last}"));
    }
    if log.unreadable > 0 {
        facts.push(format!("{} lines are not records", log.unreadable));
    }
    vec![
        Block::List(facts),
        Block::Code {
            caption: "pgveil audit verify".into(),
            text: log.verification.clone(),
        },
    ]
}

const CLASSES: [&str; 5] = [
    "identity",
    "personal",
    "sensitive",
    "non_personal",
    "unclassified",
];

fn reads(log: &LogFacts) -> Vec<Block> {
    let mut users: Vec<&str> = log.reads.iter().map(|r| r.user.as_str()).collect();
    users.dedup();
    let count = |user: &str, class: &str| {
        log.reads
            .iter()
            .find(|r| r.user == user && r.class == class)
            .map_or(0, |r| r.statements)
    };
    let rows = users
        .iter()
        .map(|u| {
            let mut row = vec![u.to_string()];
            row.extend(CLASSES.iter().map(|c| count(u, c).to_string()));
            row
        })
        .collect();
    let mut headers = vec!["user"];
    headers.extend(CLASSES);
    let mut blocks = vec![
        heading(Some("reads".into()), "Who read which classification"),
        text("Statements that ran, per user and classification of the columns they used (a statement counts once per classification)."),
        table(&headers, rows),
    ];
    for class in ["identity", "personal", "sensitive"] {
        let bars: Vec<(String, u64)> = users
            .iter()
            .map(|u| (u.to_string(), count(u, class)))
            .filter(|(_, n)| *n > 0)
            .collect();
        if !bars.is_empty() {
            blocks.push(Block::Bars(Bars {
                title: format!("Statements reading {class} data, per user"),
                bars,
                note: None,
            }));
        }
    }
    blocks
}

fn refusals(log: &LogFacts) -> Vec<Block> {
    let mut blocks = vec![heading(Some("refused".into()), "Refused statements")];
    if log.refusal_reasons.is_empty() {
        blocks.push(text("No statement was refused."));
        return blocks;
    }
    blocks.push(Block::Bars(Bars {
        title: "Refusals per reason".into(),
        bars: log.refusal_reasons.clone(),
        note: None,
    }));
    let rows = log
        .refused
        .iter()
        .rev()
        .map(|r| {
            vec![
                r.time.clone(),
                r.user.clone(),
                r.view_set.clone(),
                r.statement.clone(),
                r.reason.clone(),
                r.sqlstate.clone(),
            ]
        })
        .collect();
    blocks.push(text("The most recent refusals, newest first:"));
    blocks.push(table(
        &[
            "time",
            "user",
            "view set",
            "statement",
            "reason",
            "SQLSTATE",
        ],
        rows,
    ));
    blocks
}

fn top_statements(log: &LogFacts) -> Vec<Block> {
    let mut blocks = vec![heading(
        Some("top-statements".into()),
        "Top statements per view set",
    )];
    if log.top_statements.is_empty() {
        blocks.push(text("No statement ran."));
    }
    for (set, list) in &log.top_statements {
        blocks.push(text(format!("View set {set}:")));
        let rows = list
            .iter()
            .map(|s| {
                vec![
                    s.statement.clone(),
                    s.count.to_string(),
                    s.rows.to_string(),
                    format!("{:.2}", s.mean_ms),
                ]
            })
            .collect();
        blocks.push(table(&["statement", "runs", "rows", "mean ms"], rows));
    }
    blocks
}

fn logins_and_requests(log: &LogFacts) -> Vec<Block> {
    let logins = log
        .failed_logins
        .iter()
        .map(|(u, n)| vec![u.clone(), n.to_string()])
        .collect();
    let requests = log
        .subject_actions
        .iter()
        .map(|(a, v, n)| vec![a.clone(), v.clone(), n.to_string()])
        .collect();
    vec![
        heading(Some("failed-logins".into()), "Failed logins"),
        table(&["user name tried", "failed logins"], logins),
        heading(Some("subject-requests".into()), "Data-subject requests"),
        table(&["action", "verdict", "count"], requests),
    ]
}

fn consent(purposes: &[PurposeFacts]) -> Section {
    let rows = purposes
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.basis.clone(),
                p.source.clone(),
                p.refused.to_string(),
                p.granted.to_string(),
                p.no_record.to_string(),
                p.excluded.to_string(),
            ]
        })
        .collect();
    Section {
        id: "consent",
        title: "Consent and opt-outs per purpose".into(),
        blocks: vec![
            text("From the consent data: subjects who refused (opted out), granted or never chose; \
                  excluded = the subjects the purpose's view sets leave out (refused, plus no record for opt-in purposes)."),
            table(
                &["purpose", "basis", "recorded in", "opted out", "granted", "no record", "excluded"],
                rows,
            ),
            Block::Bars(Bars {
                title: "Opt-outs per purpose".into(),
                bars: purposes.iter().map(|p| (p.name.clone(), p.refused)).collect(),
                note: None,
            }),
        ],
    }
}

fn k_anonymity(measured: &[KFacts]) -> Section {
    let mut blocks = vec![text(
        "For each anonymous view set: the rows of its views grouped by the quasi-identifiers, as its backend login role reads them. \
         The measured k is the smallest group; the proxy still refuses aggregates over groups smaller than the configured k.",
    )];
    if measured.is_empty() {
        blocks.push(text(
            "The policy has no anonymous view set with quasi-identifiers.",
        ));
    }
    for k in measured {
        blocks.extend(k_blocks(k));
    }
    Section {
        id: "k-anonymity",
        title: "k-anonymity of anonymous view sets".into(),
        blocks,
    }
}

fn k_blocks(k: &KFacts) -> Vec<Block> {
    let configured = k.configured_k.map_or("–".to_owned(), |n| n.to_string());
    let source = if k.from_policy {
        "from the policy"
    } else {
        "default choice"
    };
    let mut blocks = vec![
        heading(
            Some(anchor(
                "k",
                &format!("{}-{}-{}", k.view_set, k.login_role, k.table),
            )),
            format!("View set {}: {} as {}", k.view_set, k.table, k.login_role),
        ),
        text(format!(
            "Quasi-identifiers ({source}): {}",
            k.quasi_identifiers.join(", ")
        )),
    ];
    match &k.measured {
        Err(e) => blocks.push(text(format!("Could not be measured: {e}"))),
        Ok(g) => {
            let measured = g.min.map_or("– (no rows)".to_owned(), |n| n.to_string());
            blocks.push(table(
                &[
                    "configured k",
                    "measured k",
                    "rows",
                    "groups",
                    "groups below k",
                    "rows in them",
                ],
                vec![vec![
                    configured,
                    measured,
                    g.rows.to_string(),
                    g.groups.to_string(),
                    g.groups_below_k.to_string(),
                    g.rows_below_k.to_string(),
                ]],
            ));
            blocks.push(Block::Bars(Bars {
                title: "Groups per group size".into(),
                bars: g.histogram.clone(),
                note: (g.groups_below_k > 0).then(|| {
                    format!(
                        "{} groups are smaller than the configured k: the rows alone are not k-anonymous over these columns; \
                         what protects them is that the proxy lets this view set read only aggregates of at least k rows",
                        g.groups_below_k
                    )
                }),
            }));
        }
    }
    blocks
}
