//! The server side of SCRAM-SHA-256 (RFC 5802/7677) as PostgreSQL does it:
//! verifiers in PostgreSQL's stored format, no channel binding.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::messages::split_cstr;

type HmacSha256 = Hmac<Sha256>;

/// Why a SCRAM exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// The client's message is not valid SCRAM.
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// The client asked for channel binding, which pgveil does not offer.
    #[error("channel binding is not supported by pgveil; connect with channel_binding=disable or prefer")]
    ChannelBinding,
    /// The proof did not match: wrong password or unknown user.
    #[error("password authentication failed")]
    BadProof,
}

/// A SCRAM-SHA-256 verifier: `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verifier(..)")
    }
}

impl Verifier {
    /// Parses PostgreSQL's stored format; None when malformed.
    pub fn parse(text: &str) -> Option<Verifier> {
        let rest = text.strip_prefix("SCRAM-SHA-256$")?;
        let (params, keys) = rest.split_once('$')?;
        let (iterations, salt) = params.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        let verifier = Verifier {
            iterations: iterations.parse().ok().filter(|&i| i > 0)?,
            salt: B64.decode(salt).ok()?,
            stored_key: B64.decode(stored).ok()?,
            server_key: B64.decode(server).ok()?,
        };
        (verifier.stored_key.len() == 32 && verifier.server_key.len() == 32).then_some(verifier)
    }

    /// A verifier that no password matches, derived from `seed` and the user
    /// name, so that an unknown user goes through the same exchange as a
    /// known one and learns nothing from it.
    pub fn decoy(seed: &[u8], user: &str) -> Verifier {
        let salt = hmac(seed, user.as_bytes());
        Verifier {
            iterations: 4096,
            salt: salt[..16].to_vec(),
            stored_key: hmac(seed, b"stored").to_vec(),
            server_key: hmac(seed, b"server").to_vec(),
        }
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// A SCRAM exchange after the server-first message was sent.
#[derive(Debug)]
pub struct Exchange {
    verifier: Verifier,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

impl Exchange {
    /// Handles client-first-message; returns the exchange and the
    /// server-first-message to send. `server_nonce` must be random.
    pub fn start(
        verifier: Verifier,
        client_first: &[u8],
        server_nonce: &str,
    ) -> Result<(Exchange, String), ScramError> {
        let text =
            std::str::from_utf8(client_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (gs2_header, bare) = split_gs2_header(text)?;
        let client_nonce = attribute(bare, 'r').ok_or(ScramError::Malformed("no client nonce"))?;
        if client_nonce.is_empty()
            || !client_nonce
                .bytes()
                .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
        {
            return Err(ScramError::Malformed("bad client nonce"));
        }
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&verifier.salt),
            verifier.iterations
        );
        let exchange = Exchange {
            verifier,
            gs2_header: gs2_header.to_owned(),
            client_first_bare: bare.to_owned(),
            server_first: server_first.clone(),
            nonce,
        };
        Ok((exchange, server_first))
    }

    /// Handles client-final-message; returns the server-final-message when
    /// the client proved it knows the password.
    pub fn finish(self, client_final: &[u8]) -> Result<String, ScramError> {
        let text =
            std::str::from_utf8(client_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("no proof"))?;
        let binding =
            attribute(without_proof, 'c').ok_or(ScramError::Malformed("no channel binding"))?;
        if B64.decode(binding).ok().as_deref() != Some(self.gs2_header.as_bytes()) {
            return Err(ScramError::Malformed("channel binding does not match"));
        }
        if attribute(without_proof, 'r') != Some(self.nonce.as_str()) {
            return Err(ScramError::Malformed("nonce does not match"));
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| ScramError::Malformed("proof is not base64"))?;
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let client_signature = hmac(&self.verifier.stored_key, auth_message.as_bytes());
        if proof.len() != client_signature.len() {
            return Err(ScramError::BadProof);
        }
        let client_key: Vec<u8> = proof
            .iter()
            .zip(client_signature)
            .map(|(p, s)| p ^ s)
            .collect();
        let stored_key = Sha256::digest(&client_key);
        if !bool::from(stored_key.as_slice().ct_eq(&self.verifier.stored_key)) {
            return Err(ScramError::BadProof);
        }
        let server_signature = hmac(&self.verifier.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)))
    }
}

/// Splits a SASLInitialResponse body into the mechanism name and the
/// client-first data; None when its lengths do not add up.
pub fn split_sasl_initial(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let (mechanism, rest) = split_cstr(body)?;
    let (len, data) = rest.split_first_chunk::<4>()?;
    let len = i32::from_be_bytes(*len);
    (usize::try_from(len).ok()? == data.len()).then_some((mechanism, data))
}

/// Splits `gs2-cbind-flag,[authzid],` from the bare client-first message.
fn split_gs2_header(text: &str) -> Result<(&str, &str), ScramError> {
    let flag_end = text
        .find(',')
        .ok_or(ScramError::Malformed("no GS2 header"))?;
    match &text[..flag_end] {
        "n" | "y" => {}
        flag if flag.starts_with("p=") => return Err(ScramError::ChannelBinding),
        _ => return Err(ScramError::Malformed("bad GS2 flag")),
    }
    let authzid_end = text[flag_end + 1..]
        .find(',')
        .map(|i| flag_end + 1 + i)
        .ok_or(ScramError::Malformed("no GS2 header"))?;
    Ok((&text[..=authzid_end], &text[authzid_end + 1..]))
}

/// The value of attribute `name` in a comma-separated SCRAM message.
fn attribute(message: &str, name: char) -> Option<&str> {
    message.split(',').find_map(|part| {
        let mut chars = part.chars();
        (chars.next() == Some(name) && chars.next() == Some('=')).then(|| &part[2..])
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    fn run(verifier: Verifier, password: &str) -> Result<(), ScramError> {
        let mut client = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
        let (exchange, server_first) = Exchange::start(verifier, client.message(), "SeRvErNoNcE")?;
        client.update(server_first.as_bytes()).unwrap();
        let server_final = exchange.finish(client.message())?;
        client.finish(server_final.as_bytes()).unwrap();
        Ok(())
    }

    #[test]
    fn right_password_is_accepted_and_server_is_verified() {
        let v = Verifier::parse(&postgres_protocol::password::scram_sha_256(b"s3cret")).unwrap();
        run(v, "s3cret").unwrap();
    }

    #[test]
    fn wrong_password_and_decoy_are_refused() {
        let v = Verifier::parse(&postgres_protocol::password::scram_sha_256(b"s3cret")).unwrap();
        assert_eq!(run(v, "guess"), Err(ScramError::BadProof));
        assert_eq!(
            run(Verifier::decoy(b"k", "nobody"), "guess"),
            Err(ScramError::BadProof)
        );
    }

    #[test]
    fn malformed_verifiers_and_messages_are_rejected() {
        assert!(Verifier::parse("md5abcdef").is_none());
        assert!(Verifier::parse("SCRAM-SHA-256$0:c2FsdA==$AAAA:AAAA").is_none());
        let v = Verifier::decoy(b"k", "u");
        assert_eq!(
            Exchange::start(v.clone(), b"p=tls-server-end-point,,n=,r=abc", "x").unwrap_err(),
            ScramError::ChannelBinding
        );
        assert!(Exchange::start(v.clone(), b"n,,n=,r=", "x").is_err());
        assert!(Exchange::start(v, b"\xff", "x").is_err());
    }
}
