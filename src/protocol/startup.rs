//! The untagged packets that open a connection: SSLRequest, GSSENCRequest,
//! CancelRequest and StartupMessage.

use tokio::io::{AsyncRead, AsyncReadExt};

use super::messages::split_cstr;
use super::ProtocolError;

/// The most bytes a startup packet may have (as PostgreSQL).
pub const MAX_STARTUP_LEN: usize = 10_000;

const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
const CANCEL_REQUEST: u32 = 80_877_102;
const PROTOCOL_3: u32 = 3;

/// One packet a client may open a connection with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    /// The client asks for TLS.
    SslRequest,
    /// The client asks for GSSAPI encryption.
    GssEncRequest,
    /// The client asks to cancel a running query of another session.
    Cancel {
        /// Process id from BackendKeyData.
        pid: i32,
        /// Secret key from BackendKeyData.
        secret: i32,
    },
    /// The session's real start.
    Startup(Startup),
}

/// A StartupMessage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Startup {
    /// Minor protocol version the client asked for (major is always 3).
    pub minor_version: u16,
    /// Parameters in the order sent (user, database, options, ...).
    pub params: Vec<(String, String)>,
}

impl Startup {
    /// The value of a startup parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one startup packet (length-prefixed, no tag byte).
pub async fn read_startup_packet<R: AsyncRead + Unpin>(
    stream: &mut R,
) -> Result<StartupPacket, ProtocolError> {
    let mut len_bytes = [0u8; 4];
    stream.read_exact(&mut len_bytes).await?;
    let len = i32::from_be_bytes(len_bytes);
    if !(8..=MAX_STARTUP_LEN as i32).contains(&len) {
        return Err(ProtocolError::BadStartup(format!(
            "invalid startup packet length {len}"
        )));
    }
    let mut body = vec![0u8; len as usize - 4];
    stream.read_exact(&mut body).await?;
    parse_startup_packet(&body)
}

/// Parses a startup packet's body (after the length).
pub fn parse_startup_packet(body: &[u8]) -> Result<StartupPacket, ProtocolError> {
    let (code, rest) = body
        .split_first_chunk::<4>()
        .ok_or_else(|| ProtocolError::BadStartup("startup packet too short".into()))?;
    match u32::from_be_bytes(*code) {
        SSL_REQUEST => Ok(StartupPacket::SslRequest),
        GSSENC_REQUEST => Ok(StartupPacket::GssEncRequest),
        CANCEL_REQUEST => parse_cancel(rest),
        version if version >> 16 == PROTOCOL_3 => parse_params(rest).map(|params| {
            StartupPacket::Startup(Startup {
                minor_version: (version & 0xffff) as u16,
                params,
            })
        }),
        version => Err(ProtocolError::BadStartup(format!(
            "unsupported frontend protocol {}.{}: pgveil supports 3.0",
            version >> 16,
            version & 0xffff
        ))),
    }
}

fn parse_cancel(rest: &[u8]) -> Result<StartupPacket, ProtocolError> {
    match rest {
        [a, b, c, d, e, f, g, h] => Ok(StartupPacket::Cancel {
            pid: i32::from_be_bytes([*a, *b, *c, *d]),
            secret: i32::from_be_bytes([*e, *f, *g, *h]),
        }),
        _ => Err(ProtocolError::BadStartup("malformed cancel request".into())),
    }
}

fn parse_params(mut rest: &[u8]) -> Result<Vec<(String, String)>, ProtocolError> {
    let malformed = || ProtocolError::BadStartup("malformed startup packet".into());
    let mut params = Vec::new();
    loop {
        match rest {
            [0] => return Ok(params),
            [] => return Err(malformed()),
            _ => {}
        }
        let (name, tail) = split_cstr(rest).ok_or_else(malformed)?;
        let (value, tail) = split_cstr(tail).ok_or_else(malformed)?;
        let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| ProtocolError::InvalidUtf8);
        params.push((text(name)?, text(value)?));
        rest = tail;
    }
}

/// Splits the `options` startup parameter into `name=value` settings
/// (`-c name=value` and `--name=value`, with backslash escapes as libpq).
pub fn parse_options(options: &str) -> Result<Vec<(String, String)>, String> {
    let words = split_option_words(options);
    let mut settings = Vec::new();
    let mut iter = words.iter();
    while let Some(word) = iter.next() {
        let setting = if word == "-c" {
            iter.next()
                .ok_or("\"-c\" needs a setting after it")?
                .as_str()
        } else if let Some(s) = word.strip_prefix("-c") {
            s
        } else if let Some(s) = word.strip_prefix("--") {
            s
        } else {
            return Err(format!(
                "unsupported command-line option {word:?}; use -c name=value"
            ));
        };
        let (name, value) = setting
            .split_once('=')
            .ok_or_else(|| format!("option {setting:?} needs a value: -c {setting}=..."))?;
        settings.push((name.replace('-', "_"), value.to_owned()));
    }
    Ok(settings)
}

fn split_option_words(options: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => word.extend(chars.next()),
            c if c.is_ascii_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_message_is_parsed() {
        let mut body = 196_608u32.to_be_bytes().to_vec();
        body.extend_from_slice(b"user\0alice\0database\0crm\0\0");
        let StartupPacket::Startup(s) = parse_startup_packet(&body).unwrap() else {
            panic!("not a startup")
        };
        assert_eq!(
            (s.param("user"), s.param("database"), s.minor_version),
            (Some("alice"), Some("crm"), 0)
        );
    }

    #[test]
    fn requests_are_recognised() {
        assert_eq!(
            parse_startup_packet(&SSL_REQUEST.to_be_bytes()).unwrap(),
            StartupPacket::SslRequest
        );
        let mut cancel = CANCEL_REQUEST.to_be_bytes().to_vec();
        cancel.extend_from_slice(&7i32.to_be_bytes());
        cancel.extend_from_slice(&(-9i32).to_be_bytes());
        assert_eq!(
            parse_startup_packet(&cancel).unwrap(),
            StartupPacket::Cancel { pid: 7, secret: -9 }
        );
    }

    #[test]
    fn malformed_packets_are_errors() {
        assert!(parse_startup_packet(b"").is_err());
        assert!(parse_startup_packet(&[0, 2, 0, 0]).is_err());
        let mut unterminated = 196_608u32.to_be_bytes().to_vec();
        unterminated.extend_from_slice(b"user\0alice");
        assert!(parse_startup_packet(&unterminated).is_err());
        let mut bad_utf8 = 196_608u32.to_be_bytes().to_vec();
        bad_utf8.extend_from_slice(b"user\0\xff\0\0");
        assert!(parse_startup_packet(&bad_utf8).is_err());
    }

    #[test]
    fn options_are_split_like_libpq() {
        let got =
            parse_options("-c pgveil.view=anonymous --search-path=a\\ b -cstatement_timeout=5")
                .unwrap();
        assert_eq!(
            got,
            vec![
                ("pgveil.view".to_owned(), "anonymous".to_owned()),
                ("search_path".to_owned(), "a b".to_owned()),
                ("statement_timeout".to_owned(), "5".to_owned()),
            ]
        );
        assert!(parse_options("-x").is_err());
    }
}
