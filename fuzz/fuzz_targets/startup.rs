//! Connection opening: startup packets, the `options` parameter, the
//! SASLInitialResponse framing and the SCRAM-SHA-256 server exchange with
//! arbitrary client-first and client-final messages against a fixed
//! verifier (password `fuzz-password`). The input is split at its first NUL
//! byte: before it the client-first message, after it the client-final one.
//! Nothing may panic; a completed exchange must have been a valid proof.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pgveil::protocol::scram::{split_sasl_initial, Exchange, Verifier};
use pgveil::protocol::startup::{parse_options, parse_startup_packet, StartupPacket};

/// The verifier of `fuzz-password` with salt `pgveil-fuzz-salt`, 4096 rounds
/// (fuzz/seeds.py builds valid exchanges for it).
const VERIFIER: &str = "SCRAM-SHA-256$4096:cGd2ZWlsLWZ1enotc2FsdA==$vDoSnGKmYTbJ+QNHpNoOOLYNBEOghID25fN9WUuc1hw=:3ovNRiaPzCkLWC3KmGALVQ+Z/l1ybWZdATXhJ8Z0CDo=";
/// The server nonce the seeds were made with.
const SERVER_NONCE: &str = "pgveilfuzzservernonce";

fn scram(client_first: &[u8], client_final: &[u8]) {
    let verifier = Verifier::parse(VERIFIER).expect("the fixed verifier parses");
    let Ok((exchange, server_first)) = Exchange::start(verifier, client_first, SERVER_NONCE) else {
        return;
    };
    assert!(server_first.starts_with("r="), "{server_first}");
    if let Ok(server_final) = exchange.finish(client_final) {
        assert!(server_final.starts_with("v="), "{server_final}");
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(StartupPacket::Startup(startup)) = parse_startup_packet(data) {
        if let Some(options) = startup.param("options") {
            let _ = parse_options(options);
        }
    }
    let _ = parse_options(&String::from_utf8_lossy(data));
    let nul = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let (first, rest) = data.split_at(nul);
    scram(first, rest.get(1..).unwrap_or_default());
    if let Some((_, client_first)) = split_sasl_initial(data) {
        scram(client_first, b"");
    }
});
