//! Finding the line of a key path (`tables.customers.columns.email`) in a
//! TOML text, whichever syntax wrote it: `[a.b]` headers, dotted keys, or
//! implicit tables created by a longer header.

/// The 1-based (line, column) where `path` is defined in `text`: the
/// header or key naming exactly `path`, else the first one beneath it.
pub fn locate(text: &str, path: &[&str]) -> Option<(usize, usize)> {
    let mut below = None;
    let mut header: Vec<String> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_start();
        let column = raw.len() - line.len() + 1;
        let full = if let Some(inner) = line.strip_prefix('[') {
            let inner = inner.trim_start_matches('[');
            let Some(end) = inner.find(']') else { continue };
            header = split_key(&inner[..end]);
            header.clone()
        } else if let Some(eq) = key_end(line) {
            let mut full = header.clone();
            full.extend(split_key(&line[..eq]));
            full
        } else {
            continue;
        };
        if full.len() == path.len() && full.iter().zip(path).all(|(a, b)| a == b) {
            return Some((i + 1, column));
        }
        if below.is_none() && full.len() > path.len() && full.iter().zip(path).all(|(a, b)| a == b)
        {
            below = Some((i + 1, column));
        }
    }
    below
}

/// The byte index of the `=` that ends a key, if the line is `key = value`.
fn key_end(line: &str) -> Option<usize> {
    if line.starts_with('#') {
        return None;
    }
    let mut quote = None;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '=') => return Some(i),
            _ => {}
        }
    }
    None
}

/// Splits a dotted TOML key into its parts, unquoting quoted parts.
fn split_key(key: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quote = None;
    for c in key.chars() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '.') => parts.push(std::mem::take(&mut current)),
            (None, c) if c.is_whitespace() => {}
            (_, c) => current.push(c),
        }
    }
    parts.push(current);
    parts
}

#[cfg(test)]
mod tests {
    use super::locate;

    const TEXT: &str = "[a]\nx = 1\n\n[tables.customers.columns]\nemail = \"identity\"\n\"*_at\" = \"non_personal\"\n[view_sets.s]\nkind = \"standard\"\n";

    #[test]
    fn finds_keys_headers_and_implicit_tables() {
        assert_eq!(locate(TEXT, &["a", "x"]), Some((2, 1)));
        assert_eq!(
            locate(TEXT, &["tables", "customers", "columns", "email"]),
            Some((5, 1))
        );
        assert_eq!(
            locate(TEXT, &["tables", "customers", "columns", "*_at"]),
            Some((6, 1))
        );
        assert_eq!(locate(TEXT, &["tables", "customers"]), Some((4, 1)));
        assert_eq!(locate(TEXT, &["view_sets", "s"]), Some((7, 1)));
        assert_eq!(locate(TEXT, &["nope"]), None);
    }
}
