//! Rows returned or affected, from a CommandComplete tag.

/// The row count of a CommandComplete tag such as `SELECT 5`, `INSERT 0 3`,
/// `UPDATE 2`, `DELETE 1`, `MERGE 4`, `FETCH 10`, `MOVE 3` or `COPY 10`
/// (a trailing NUL is allowed); None for tags without a count (`CREATE TABLE`).
pub fn rows_from_command_tag(tag: &[u8]) -> Option<u64> {
    let tag = tag.strip_suffix(&[0]).unwrap_or(tag);
    let text = std::str::from_utf8(tag).ok()?;
    let words: Vec<&str> = text.split(' ').collect();
    let count = match words.as_slice() {
        ["INSERT", _oid, n] => n,
        [cmd, n] if COUNTED.contains(cmd) => n,
        _ => return None,
    };
    count.parse().ok()
}

/// The row count of a whole CommandComplete message (`C`, length, tag).
pub fn rows_from_command_complete(message: &[u8]) -> Option<u64> {
    match message {
        [b'C', len @ ..] if len.len() >= 4 => rows_from_command_tag(&len[4..]),
        _ => None,
    }
}

const COUNTED: &[&str] = &[
    "SELECT", "UPDATE", "DELETE", "MERGE", "FETCH", "MOVE", "COPY",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_read_from_tags() {
        assert_eq!(rows_from_command_tag(b"SELECT 5"), Some(5));
        assert_eq!(rows_from_command_tag(b"INSERT 0 3\0"), Some(3));
        assert_eq!(rows_from_command_tag(b"UPDATE 2"), Some(2));
        assert_eq!(rows_from_command_tag(b"DELETE 0"), Some(0));
        assert_eq!(rows_from_command_tag(b"COPY 10"), Some(10));
        assert_eq!(rows_from_command_tag(b"MERGE 4"), Some(4));
        assert_eq!(rows_from_command_tag(b"FETCH 12"), Some(12));
    }

    #[test]
    fn tags_without_counts_give_none() {
        assert_eq!(rows_from_command_tag(b"CREATE TABLE"), None);
        assert_eq!(rows_from_command_tag(b"BEGIN"), None);
        assert_eq!(rows_from_command_tag(b"INSERT 3"), None);
        assert_eq!(rows_from_command_tag(b"SELECT x"), None);
        assert_eq!(rows_from_command_tag(b""), None);
        assert_eq!(rows_from_command_tag(&[0xff, b' ', b'1']), None);
    }

    #[test]
    fn whole_messages_are_accepted() {
        let mut msg = vec![b'C'];
        let tag = b"INSERT 0 7\0";
        msg.extend_from_slice(&((tag.len() + 4) as u32).to_be_bytes());
        msg.extend_from_slice(tag);
        assert_eq!(rows_from_command_complete(&msg), Some(7));
        assert_eq!(rows_from_command_complete(b"Z\0\0\0\x05I"), None);
    }
}
